"""The actor's end of the link: streams unacknowledged journal steps to the learner from a background thread
and receives parameter snapshots. It names the cause when the learner will not have this actor: a wrong
learner key, an actor key the learner does not authorise, or steps that do not fit the run.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from dojo.link.journal import Journal
from dojo.link.keys import AUTHORIZED_DIR, LEARNER_KEY_NAME, bracket, parse_address, read_key_file
from dojo.link.wire import (PROTOCOL_VERSION, LinkProtocolError, PublishedParams, Schema, encode_score,
                            encode_steps, is_int, pack, require)
from dojo.threads import join_thread

log = logging.getLogger("dojo.link")

# Handshakes that fail without detail right after connecting: the learner could not decrypt this actor's
# hello, which means learner.key is not that learner's key. One can be a fluke of a restarting learner.
_WRONG_KEY_HANDSHAKES = 2


@dataclasses.dataclass(frozen=True)
class LinkStatus:
    """What the actor knows about its link, for logs and progress displays."""

    connected: bool  # heard from the learner within timeout_s
    silent_for_s: float  # since the learner was last heard from (or since the client started)
    refused: str | None  # why the learner will not have this actor (final: streaming has stopped), or None
    acked_seq: int
    sent_seq: int
    journal_seq: int
    inflight: int
    max_inflight_seen: int
    rewinds: int
    params_version: int
    errors: dict[str, int]


class LinkClient:
    """The actor's end: streams unacked journal steps to the learner from a background thread.

    The control loop never touches the network: it appends to the journal and reads `latest_params()`
    and `status()`, which only take a lock. At most `max_inflight` messages (each <= `batch_steps` steps
    and about `batch_bytes`) wait for an ack; beyond that the journal simply grows. When no ack arrives
    within `timeout_s`, or the learner refuses a gap (after a restart), the client re-sends from the last
    acked step. Steps flow only after the learner's first reply, which tells where its store stands, so a
    restarted actor resumes from its durable journal. Run one client per actor key: the learner keeps one
    sequence per key. Every sync announces `schema` (this actor's step arrays) and the actor id; a learner
    whose run differs refuses, and so does one that rejects the keys: `status().refused` says why.
    """

    def __init__(self, journal: Journal, learner: str, keys_dir: str | os.PathLike, actor: str = "actor-0",
                 max_inflight: int = 4, batch_steps: int = 32, batch_bytes: int = 4 << 20,
                 heartbeat_s: float = 0.5, timeout_s: float = 3.0, params_version: int = -1,
                 max_params_bytes: int = 1 << 30, schema: Schema | None = None):
        if max_inflight < 1 or batch_steps < 1:
            raise ValueError(f"max_inflight and batch_steps must be >= 1, got {max_inflight}, {batch_steps}")
        keys_dir = Path(keys_dir)
        public, secret = read_key_file(keys_dir / f"{actor}.key_secret", f"actor {actor!r} secret", secret=True)
        server_public, _ = read_key_file(keys_dir / f"{LEARNER_KEY_NAME}.key", "learner public", secret=False)
        host, port = parse_address(learner)
        self.actor, self.learner = actor, learner
        self._journal = journal
        self._max_inflight, self._batch_steps, self._batch_bytes = max_inflight, batch_steps, batch_bytes
        self._heartbeat_s, self._timeout_s = heartbeat_s, timeout_s
        self._lock = threading.Lock()
        self._snapshot: PublishedParams | None = None
        self._params_version = params_version
        self._acked = 0
        self._sent = 0
        self._epoch = 0
        self._inflight: collections.deque[tuple[int, float]] = collections.deque()  # (last seq, sent at)
        self._max_inflight_seen = 0
        self._rewinds = 0
        self._errors: collections.Counter[str] = collections.Counter()
        self._schema = {k: [list(shape), dtype] for k, (shape, dtype) in schema.items()} if schema else None
        self._refused: str | None = None
        self._learner_status: dict[str, Any] = {}
        self._failed_handshakes = 0  # without detail, in a row
        self._started_s = time.monotonic()
        self._last_heard_s = self._started_s - timeout_s  # "not connected" until the learner answers
        self._reported_unreachable = False
        self._scores_out: collections.deque[list[Any]] = collections.deque()  # score requests to send
        self._scores: dict[int, dict | None] = {}  # request id -> reply (None: asked, not answered yet)
        self._next_score_id = 0
        self._stop = threading.Event()

        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.DEALER)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, public, secret
        sock.setsockopt(zmq.MAXMSGSIZE, max_params_bytes + (1 << 20))
        sock.immediate = True  # while disconnected, sends fail at once instead of piling up in a queue
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = max_inflight + 4
        sock.reconnect_ivl, sock.reconnect_ivl_max = 100, 1000
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(timeout_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(timeout_s * 1000))
        if ":" in host.strip("[]"):
            sock.ipv6 = True
        try:
            sock.connect(f"tcp://{bracket(host.strip('[]'))}:{port}")
        except zmq.ZMQError as e:
            sock.close()
            self._ctx.term()
            raise ValueError(f"cannot connect to learner address {learner!r}: {e.strerror}") from None
        self._sock = sock
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        # A score request wakes the link thread at once through this pair (the control thread sends, the link
        # thread receives), instead of at its next 5 ms round.
        wake = f"inproc://dojo-link-wake-{id(self)}"
        self._wake_in = self._ctx.socket(zmq.PAIR)
        self._wake_in.bind(wake)
        self._wake_out = self._ctx.socket(zmq.PAIR)
        self._wake_out.connect(wake)
        self._thread = threading.Thread(target=self._run, name="dojo-link-client", daemon=True)
        self._thread.start()

    # -- control-loop API (non-blocking) --

    def learner_status(self) -> dict:
        """The learner's newest status (sent with every ack and pong), e.g. {"lead_steps": ..., "done": ...}."""
        with self._lock:
            return dict(self._learner_status)

    def request_score(self, inputs: dict) -> int:
        """Ask the learner's reward service to label `inputs` (camera frames, state, "instruction"); returns the
        request's id for `score_reply`. Sent by the link's thread at its next round (within a few ms)."""
        with self._lock:
            self._next_score_id += 1
            request_id = self._next_score_id
        frames = encode_score(request_id, inputs)  # raises on inputs that cannot travel, before anything is sent
        with self._lock:
            self._scores[request_id] = None
        self._scores_out.append(frames)
        self._wake_out.send(b"", zmq.NOBLOCK)
        return request_id

    def score_reply(self, request_id: int) -> dict | None:
        """The service's reply to a request ({value, success, source} or {error}), or None while there is none."""
        with self._lock:
            return self._scores.get(request_id)

    def forget_score(self, request_id: int) -> None:
        """Give up on a request: a reply that comes later is dropped."""
        with self._lock:
            self._scores.pop(request_id, None)

    def latest_params(self) -> PublishedParams | None:
        """The newest parameter snapshot received, or None."""
        with self._lock:
            return self._snapshot

    def status(self) -> LinkStatus:
        now = time.monotonic()
        with self._lock:
            return LinkStatus(
                connected=now - self._last_heard_s < self._timeout_s,
                silent_for_s=now - max(self._last_heard_s, self._started_s),
                refused=self._refused, acked_seq=self._acked, sent_seq=self._sent,
                journal_seq=self._journal.last_seq(), inflight=len(self._inflight),
                max_inflight_seen=self._max_inflight_seen, rewinds=self._rewinds,
                params_version=self._params_version, errors=dict(self._errors))

    def close(self) -> None:
        self._stop.set()
        join_thread(self._thread, 30.0, "the actor link's client thread")
        self._wake_out.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> LinkClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- background thread: the only user of the sockets --

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        last_sync_s = -1e9
        try:
            while not self._stop.is_set():
                # A short poll: new journal steps are noticed within a few ms without a wake-up channel.
                events = dict(poller.poll(5))
                if self._wake_in in events:
                    while self._wake_in.poll(0):
                        self._wake_in.recv()
                if self._monitor in events:
                    self._drain_monitor()
                self._receive()
                if self._stop.is_set():  # refused: nothing more to send
                    break
                now = time.monotonic()
                if self._inflight and now - self._inflight[0][1] > self._timeout_s:
                    self._rewind(f"no ack for {self._timeout_s:.1f} s")
                if now - last_sync_s >= self._heartbeat_s:
                    if self._try_send([pack({"v": PROTOCOL_VERSION, "kind": "sync", "actor": self.actor,
                                             "params_version": self._params_version, "schema": self._schema})]):
                        last_sync_s = now
                while self._scores_out and self._try_send(self._scores_out[0]):
                    self._scores_out.popleft()
                if self._last_heard_s > self._started_s:  # the first reply says where the learner stands
                    self._send_steps()
                self._report_connectivity(now)
        except Exception:
            log.exception("link client thread failed; the actor goes on acting but nothing is streamed")
            with self._lock:
                self._errors["thread_failed"] += 1
        finally:
            self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._wake_in.close(linger=0)
            self._sock.close(linger=0)

    def _try_send(self, frames: list[Any]) -> bool:
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # not connected (immediate) or the queue is full: try again next round
            return False

    def _send_steps(self) -> None:
        while len(self._inflight) < self._max_inflight and self._journal.last_seq() > self._sent:
            batch, first, nbytes = [], None, 0
            for seq, step in self._journal.unacked(self._sent):
                if first is None:
                    first = seq
                batch.append(step)
                nbytes += sum(getattr(v, "nbytes", 8) for v in step.values())
                if len(batch) >= self._batch_steps or nbytes >= self._batch_bytes:
                    break
            if not batch:
                return
            if first != self._sent + 1:
                # The learner wants steps the journal no longer has (the learner lost acked steps):
                # resending cannot fill that gap, so stop instead of looping on refusals.
                log.error("journal starts at seq %d but the learner needs %d onwards; streaming stopped",
                          first, self._sent + 1)
                with self._lock:
                    self._errors["journal_gap"] += 1
                self._stop.set()
                return
            try:
                frames = encode_steps(first, self._epoch, batch)
            except ValueError as e:
                # A step that cannot travel is a bug in the actor; stop streaming rather than loop on it.
                log.error("cannot encode steps %d..%d: %s; streaming stopped", first, first + len(batch) - 1, e)
                with self._lock:
                    self._errors["bad_step"] += 1
                self._stop.set()
                return
            if not self._try_send(frames):
                return
            with self._lock:
                self._sent = first + len(batch) - 1
                self._inflight.append((self._sent, time.monotonic()))
                self._max_inflight_seen = max(self._max_inflight_seen, len(self._inflight))

    def _rewind(self, why: str) -> None:
        with self._lock:
            if self._sent > self._acked:
                log.info("re-sending from seq %d (%s)", self._acked + 1, why)
            self._sent = self._acked
            self._epoch += 1  # answers to what was sent before now are stale
            self._inflight.clear()
            self._rewinds += 1

    def _receive(self) -> None:
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._handle_reply(frames)
            except (LinkProtocolError, KeyError, TypeError, ValueError) as e:
                log.warning("ignored a malformed reply from the learner: %s", e)
                with self._lock:
                    self._errors["bad_reply"] += 1

    def _handle_reply(self, frames: list[bytes]) -> None:
        header = msgpack.unpackb(frames[0], raw=False, strict_map_key=True)
        require(isinstance(header, dict), "bad_header", "reply header must be a map")
        kind = header["kind"]
        if kind == "refused":  # final, and not a learner this actor is connected to
            self._refuse(f"the learner at {self.learner} refused this actor: {header.get('detail')}")
            return
        if kind == "score":
            with self._lock:
                self._last_heard_s = time.monotonic()
                if header.get("id") in self._scores:  # not given up on
                    self._scores[header["id"]] = header
            return
        acked = header.get("acked_seq", 0)
        require(is_int(acked), "bad_header", f"acked_seq must be an int, got {acked!r}")
        with self._lock:
            self._last_heard_s = time.monotonic()
            if isinstance(header.get("status"), dict):
                self._learner_status = header["status"]
            newly_acked = acked > self._acked
            if newly_acked:
                self._acked = acked
                # After an actor restart the learner may hold more than this client sent: start after it.
                self._sent = max(self._sent, acked)
                while self._inflight and self._inflight[0][0] <= acked:
                    self._inflight.popleft()
        if newly_acked:
            self._journal.ack(acked)
        if kind == "ack" and header.get("not_stored"):
            if header["not_stored"] == "gap" and header.get("epoch") == self._epoch:
                if acked < self._acked:
                    log.error("learner holds only up to seq %d but had acknowledged %d: it lost steps", acked,
                              self._acked)
                    with self._lock:
                        self._acked = acked
                self._rewind(f"learner holds up to seq {acked}")
            # a hook_error is retried after timeout_s, which paces retries against a failing store
        elif kind == "params":
            require(len(frames) == 2 and is_int(header.get("version")), "bad_header",
                   "params needs a version and a blob")
            with self._lock:
                if header["version"] > self._params_version:
                    self._snapshot = PublishedParams(header["version"], frames[1], dict(header.get("metadata") or {}))
                    self._params_version = header["version"]
        elif kind == "error":
            with self._lock:
                key = f"learner_rejected_{header.get('reason')}"
                self._errors[key] += 1
                n = self._errors[key]
            if n <= 10:
                log.error("learner rejected a message: %s", header.get("detail"))

    def _drain_monitor(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._failed_handshakes = 0
            elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._refuse(f"the learner at {self.learner} does not authorise this actor's key ({self.actor}): "
                             f"copy {self.actor}.key into the learner's RUN/keys/{AUTHORIZED_DIR}/ and restart it")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self._failed_handshakes += 1
                if self._failed_handshakes >= _WRONG_KEY_HANDSHAKES:
                    self._refuse(f"the learner at {self.learner} cannot decrypt this actor's handshake: the "
                                 f"{LEARNER_KEY_NAME}.key given to this actor is not that learner's key (copy "
                                 f"RUN/keys/{LEARNER_KEY_NAME}.key from its run), or no dojo learner listens there")
            elif event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                with self._lock:
                    self._errors["handshake_failed_protocol"] += 1

    def _refuse(self, why: str) -> None:
        """Final: the learner will not have this actor as it is. Streaming stops; the actor reads `refused`."""
        with self._lock:
            first = self._refused is None
            self._refused = self._refused or why
        if first:
            log.error("%s", why)
        self._stop.set()

    def _report_connectivity(self, now: float) -> None:
        silent_s = now - max(self._last_heard_s, self._started_s)  # a new client gets timeout_s to connect
        unacked = self._journal.last_seq() - self._acked
        if silent_s >= self._timeout_s and not self._reported_unreachable:
            self._reported_unreachable = True
            log.warning("learner at %s unreachable (silent %.1f s); %d steps wait in the journal",
                        self.learner, silent_s, unacked)
        elif silent_s < self._timeout_s and self._reported_unreachable:
            self._reported_unreachable = False
            log.info("learner at %s reachable again; %d steps to send", self.learner, unacked)
