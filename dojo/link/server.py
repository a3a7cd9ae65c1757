"""The learner's end of the link: receives actors' steps, hands new in-order ones to a hook that makes them
durable, acknowledges them, checks them against the run's schema and serves parameter snapshots.

Exactly-once delivery: each actor numbers its steps 1, 2, 3, ... in its journal. The server passes only
new, in-order steps to `on_steps`, then acknowledges the highest contiguous sequence number stored.
Duplicates are dropped and gaps refused, so a resend after a reconnect or a learner restart never stores
a step twice or skips one.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from dojo.link.keys import AUTHORIZED_DIR, LEARNER_KEY_NAME, bracket, load_authorized, read_key_file
from dojo.link.wire import (LinkProtocolError, PublishedParams, Schema, Step, decode_message, is_int, pack,
                            schema_mismatch)
from dojo.threads import join_thread

log = logging.getLogger("dojo.link")

DEFAULT_PORT = 5570
OnSteps = Callable[[str, int, list[Step]], None]


class _Authenticator(ThreadAuthenticator):
    """ZAP handler: accepts only the authorized actor keys, and names each peer by its key file."""

    def __init__(self, context: zmq.Context, names: dict[bytes, str], on_denied: Callable[[], None]):
        super().__init__(context, log=logging.getLogger("dojo.link.auth"))
        self._names = names
        self._on_denied = on_denied
        self.configure_curve_callback("*", self)

    def callback(self, domain: str, z85_key: bytes) -> bool:
        if z85_key in self._names:
            return True
        self._on_denied()
        log.warning("rejected an actor with an unknown key %s", z85_key.decode(errors="replace"))
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self._names[zmq.utils.z85.encode(client_public_key)]


@dataclasses.dataclass
class _ActorState:
    last_seq: int
    identity: bytes = b""
    last_seen_s: float = -1e9
    params_version: int = -1  # as last reported by the actor
    sent_version: int = -1
    sent_at_s: float = -1e9


class LinkServer:
    """The learner's end: receives steps, calls `on_steps` for new in-order ones, acks, serves parameters.

    `on_steps(actor_id, first_seq, steps)` must make the steps durable before returning; only then are they
    acknowledged. If it raises, nothing is acked and the actor re-sends later. `last_seq_by_actor` is what
    the store already holds per actor (after a learner restart), so resends are recognised as duplicates.
    With a `schema` (the run's arrays: key -> (shape, dtype)), an actor whose sync announces other arrays is
    refused, and a step whose arrays differ never reaches `on_steps`: a store never holds mixed shapes.
    `status()` (msgpack-able, called on the serving thread) goes with every ack and pong: the learner's news
    for its actors, such as how far their data runs ahead of its updates. A `scorer` (a
    dojo.rewards.service.RewardService) answers actors' score requests: the learner's reward service.

    Use either `poll(timeout_s)` from your own loop, or `start()` to serve from a background thread (then
    `on_steps` runs on that thread). `publish()` and `stats()` are thread-safe.
    """

    def __init__(self, on_steps: OnSteps, keys_dir: str | os.PathLike, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, last_seq_by_actor: Mapping[str, int] | None = None,
                 max_message_bytes: int = 64 << 20, rcv_hwm: int = 64, heartbeat_s: float = 0.5,
                 timeout_s: float = 3.0, schema: Schema | None = None,
                 status: Callable[[], dict[str, Any]] | None = None, scorer=None):
        if not (is_int(port) and 0 <= port <= 65535):
            raise ValueError(f"link port must be in 1..65535 (0: any free port), got {port!r}")
        keys_dir = Path(keys_dir)
        public, secret = read_key_file(keys_dir / f"{LEARNER_KEY_NAME}.key_secret", "learner secret", secret=True)
        names = load_authorized(keys_dir / AUTHORIZED_DIR)
        self._on_steps = on_steps
        self.schema = schema
        self._max_message_bytes = max_message_bytes
        self._timeout_s = timeout_s
        self._actors: dict[str, _ActorState] = {a: _ActorState(int(s)) for a, s in (last_seq_by_actor or {}).items()}
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._snapshot: PublishedParams | None = None
        self._status = status
        self._scorer = scorer
        self._snapshot_dirty = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

        self._ctx = zmq.Context()
        self._auth = _Authenticator(self._ctx, names, lambda: self._count("auth_denied"))
        self._auth.start()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = public, secret
        # libzmq drops a peer that sends any single frame above this; decode_message checks the total.
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.rcvhwm = rcv_hwm
        sock.sndhwm = rcv_hwm
        sock.linger = 0
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(heartbeat_s * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(timeout_s * 1000))
        if ":" in host:
            sock.ipv6 = True
        try:
            if port == 0:
                port = sock.bind_to_random_port(f"tcp://{bracket(host)}")
            else:
                sock.bind(f"tcp://{bracket(host)}:{port}")
        except zmq.ZMQError as e:
            sock.close()
            self._auth.stop()
            self._ctx.term()
            hint = " (is another learner running? pick another port)" if e.errno == zmq.EADDRINUSE else ""
            raise OSError(e.errno, f"cannot bind the learner link to {host}:{port}: {e.strerror}{hint}") from None
        self.host, self.port = host, port
        self._sock = sock
        self._monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        log.info("learner link listening on %s:%d with %d authorized actor key(s)", host, port, len(names))

    @property
    def address(self) -> str:
        return f"{bracket(self.host)}:{self.port}"

    # -- public API --

    def publish(self, blob: bytes, version: int, metadata: Mapping[str, Any] | None = None) -> None:
        """Offer a new parameter snapshot; actors that report an older version receive it (once).

        `metadata` must be msgpack-able (str, numbers, bools, None, lists, maps). Actors refuse blobs over
        their `max_params_bytes`.
        """
        metadata = dict(metadata or {})
        try:
            pack(metadata)  # fail here, in the caller's thread, if it cannot travel
        except TypeError as e:
            raise ValueError(f"snapshot metadata must be msgpack-able: {e}") from None
        with self._lock:
            current = self._snapshot.version if self._snapshot else -1
            if not is_int(version) or version <= current:
                raise ValueError(f"snapshot version must be an int > the last published ({current}), got {version!r}")
            self._snapshot = PublishedParams(version, bytes(blob), metadata)
            self._snapshot_dirty = True

    def last_seq(self, actor_id: str) -> int:
        with self._lock:
            state = self._actors.get(actor_id)
            return state.last_seq if state else 0

    def stats(self) -> dict[str, int]:
        """Counters: messages, steps_stored, duplicates, gaps_refused, rejected_<reason>, auth_denied, ..."""
        with self._lock:
            return dict(self._counts)

    def poll(self, timeout_s: float = 0.0, max_messages: int = 1000) -> int:
        """Handle whatever has arrived (waiting up to `timeout_s` for the first); return messages handled."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            raise RuntimeError("LinkServer.poll() called while start() serves from its own thread")
        handled = 0
        events = dict(self._poller.poll(int(timeout_s * 1000)))
        if self._monitor in events:
            self._drain_monitor()
        while handled < max_messages:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._handle(frames)
            handled += 1
        if self._snapshot_dirty:
            self._push_snapshot()
        if self._scorer is not None:
            for actor_id, reply in self._scorer.replies():
                state = self._actors.get(actor_id)
                if state is not None:
                    self._reply(state.identity, reply)
        return handled

    def start(self) -> LinkServer:
        """Serve from a background thread until `close()`."""
        if self._thread is not None:
            raise RuntimeError("LinkServer.start() called twice")

        def serve() -> None:
            while not self._stop.is_set():
                self.poll(0.001 if self._scorer is not None and self._scorer.pending() else 0.005)
        self._thread = threading.Thread(target=serve, name="dojo-link-server", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            join_thread(self._thread, 30.0, "the learner link's server thread")
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)
        self._auth.stop()
        self._ctx.term()

    def __enter__(self) -> LinkServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals --

    def _count(self, name: str, n: int = 1) -> int:
        with self._lock:
            self._counts[name] += n
            return self._counts[name]

    def _drain_monitor(self) -> None:
        names = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake_failed_auth",
                 zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake_failed_protocol",
                 zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failed_other",
                 zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshakes", zmq.EVENT_DISCONNECTED: "disconnects"}
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            name = names.get(event["event"])
            if name:
                n = self._count(name)
                if name.startswith("handshake_failed") and (n <= 10 or n % 1000 == 0):
                    log.warning("refused a connection from %s (%s, %d so far)",
                                event.get("endpoint", b"?"), name, n)

    def _reply(self, identity: bytes, header: dict[str, Any], *extra: bytes) -> None:
        if header["kind"] in ("ack", "pong") and self._status is not None:
            header["status"] = self._status()
        try:
            self._sock.send_multipart([identity, pack(header), *extra], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._count("replies_dropped")  # that actor is not reading; it will time out and ask again

    def _handle(self, frames: list[zmq.Frame]) -> None:
        self._count("messages")
        identity, body = frames[0].bytes, frames[1:]
        actor_id = body[0].get("User-Id") if body else "?"
        try:
            header, steps = decode_message(body, self._max_message_bytes)
        except LinkProtocolError as e:
            n = self._count(f"rejected_{e.reason}")
            if n <= 10 or n % 1000 == 0:
                log.warning("rejected a message from actor %s: %s (%d %s so far)", actor_id, e, n, e.reason)
            self._reply(identity, {"kind": "error", "reason": e.reason, "detail": str(e)[:200]})
            return
        now = time.monotonic()
        with self._lock:
            state = self._actors.setdefault(actor_id, _ActorState(0))
            state.identity, state.last_seen_s = identity, now
        if header["kind"] == "score":
            self._score(actor_id, identity, header, steps[0])
            return
        sync = header["kind"] == "sync"
        problem = self._refusal(actor_id, header) if sync else self._step_problem(actor_id, steps)
        if problem:
            n = self._count("refused")
            if n <= 10 or n % 1000 == 0:
                log.error("refused actor %s: %s (%d refusals so far)", actor_id, problem, n)
            self._reply(identity, {"kind": "refused", "actor": actor_id, "detail": problem})
        elif sync:
            state.params_version = header["params_version"]
            self._serve_params(state, now, reply_anyway=True)
        else:
            self._store(actor_id, state, identity, header, steps)

    def _score(self, actor_id: str, identity: bytes, header: dict[str, Any], inputs: Step) -> None:
        if self._scorer is None:
            self._reply(identity, {"kind": "score", "id": header["id"], "error": "this learner serves no reward "
                                   "model: start it with the actor's reward.source and reward.model, and "
                                   "reward.serve=learner"})
        else:
            self._count("score_requests")
            self._scorer.submit(actor_id, header["id"], inputs)

    def _step_problem(self, actor_id: str, steps: list[Step]) -> str | None:
        if self.schema is None:
            return None
        for step in steps:
            arrays = {k: (v.shape, v.dtype) for k, v in step.items() if not isinstance(v, (str, bool, int, float))}
            problem = schema_mismatch(self.schema, arrays, who=f"a step of actor {actor_id}")
            if problem:
                return problem
        return None

    def _refusal(self, actor_id: str, header: dict[str, Any]) -> str | None:
        """Why a syncing actor cannot join this run (its announced id or arrays differ), or None."""
        claimed = header.get("actor") or actor_id
        if claimed != actor_id:
            return (f"this actor calls itself {claimed!r} but its key is the learner's {actor_id!r}: give it "
                    f"actor.id={actor_id} or the key pair of {claimed!r}")
        if self.schema is None or header.get("schema") is None:
            return None
        return schema_mismatch(self.schema, header["schema"], who=f"actor {actor_id}")

    def _store(self, actor_id: str, state: _ActorState, identity: bytes, header: dict[str, Any],
               steps: list[Step]) -> None:
        first, last, epoch = header["first_seq"], state.last_seq, header["epoch"]
        if first > last + 1:
            self._count("gaps_refused")
            self._reply(identity, {"kind": "ack", "acked_seq": last, "epoch": epoch, "not_stored": "gap"})
            return
        skip = last + 1 - first
        if skip:
            self._count("duplicates", min(skip, len(steps)))
        new = steps[skip:]
        if new:
            try:
                self._on_steps(actor_id, last + 1, new)
            except Exception:
                n = self._count("hook_errors")
                log.exception("on_steps failed for actor %s seq %d..%d (%d failures); not acknowledged",
                              actor_id, last + 1, last + len(new), n)
                self._reply(identity, {"kind": "ack", "acked_seq": last, "epoch": epoch, "not_stored": "hook_error"})
                return
            with self._lock:
                state.last_seq = last + len(new)
                self._counts["steps_stored"] += len(new)
        self._reply(identity, {"kind": "ack", "acked_seq": state.last_seq, "epoch": epoch, "not_stored": None})

    def _serve_params(self, state: _ActorState, now: float, reply_anyway: bool) -> None:
        snap = self._snapshot
        recently_sent = (snap is not None and state.sent_version == snap.version
                         and now - state.sent_at_s < self._timeout_s)
        if snap is not None and snap.version > state.params_version and not recently_sent:
            header = {"kind": "params", "version": snap.version, "metadata": snap.metadata, "acked_seq": state.last_seq}
            self._reply(state.identity, header, snap.blob)
            state.sent_version, state.sent_at_s = snap.version, now
            self._count("params_sent")
        elif reply_anyway:
            self._reply(state.identity, {"kind": "pong", "acked_seq": state.last_seq})

    def _push_snapshot(self) -> None:
        """Send a new snapshot at once to every actor heard from recently, rather than at its next sync."""
        self._snapshot_dirty = False
        now = time.monotonic()
        for state in list(self._actors.values()):
            if state.identity and now - state.last_seen_s < self._timeout_s:
                self._serve_params(state, now, reply_anyway=False)


