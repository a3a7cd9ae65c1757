"""The actor/learner link: steps stream from actors to the learner, parameter snapshots flow back.

pyzmq over TCP (loopback unless told otherwise), authenticated and encrypted with CurveZMQ; msgpack
headers plus raw numpy buffers as separate frames, never pickle.

Exactly-once delivery works like this. Each actor numbers its steps 1, 2, 3, ... in its local journal.
`LinkClient` streams unacknowledged steps from the journal in a background thread; `LinkServer` passes
only new, in-order steps to its `on_steps` hook (which makes them durable), then acknowledges the highest
contiguous sequence number stored. Duplicates are dropped and gaps refused, so a resend after a reconnect
or a learner restart never stores a step twice or skips one.

Key files (`create_keys(run_dir, ...)` writes them; CurveZMQ certificates as `zmq.auth` writes them):

    KEYS/learner.key, learner.key_secret      the learner's key pair
    KEYS/<actor>.key, <actor>.key_secret      one pair per actor; the actor id is the file's stem
    KEYS/authorized/<actor>.key               public keys the learner accepts

The learner needs `learner.key_secret` and `authorized/`; an actor needs its `<actor>.key_secret` and
`learner.key`.

Wire format (frames of one multipart message; actor -> learner):

    steps:  header {v, kind: "steps", first_seq, epoch, steps: [{a: [[key, dtype, shape], ...],
            s: {key: scalar}}, ...]}, then one frame per array, in order
    sync:   header {v, kind: "sync", params_version}   (heartbeat; asks for newer parameters)

learner -> actor: {kind: "ack" | "pong" | "error", acked_seq, ...}, or {kind: "params", version,
metadata, acked_seq} followed by the parameter blob.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import msgpack
import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from dojo.threads import join_thread

log = logging.getLogger("dojo.link")

PROTOCOL_VERSION = 1
DEFAULT_PORT = 5570
LEARNER_KEY_NAME = "learner"
AUTHORIZED_DIR = "authorized"

# Little-endian numeric dtypes only: no object arrays, no strings, nothing numpy would unpickle.
ALLOWED_DTYPES = frozenset(
    np.dtype(name).newbyteorder("<").str
    for name in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                 "float16", "float32", "float64")
)
MAX_NDIM = 8
MAX_KEY_LEN = 128
MAX_STR_LEN = 4096

Step = dict[str, Any]  # key -> numpy array, or a str/bool/int/float scalar that travels in the header
OnSteps = Callable[[str, int, list[Step]], None]


class LinkProtocolError(ValueError):
    """A message that breaks the wire format; `reason` is a short category used in the counters."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A versioned parameter snapshot: opaque bytes (e.g. flax-serialised params) plus metadata."""

    version: int
    blob: bytes
    metadata: dict[str, Any]


class Journal(Protocol):
    """Where an actor keeps the steps it produced until the learner has stored them.

    Sequence numbers start at 1 and increase by 1. All methods must be thread-safe: the control loop
    appends while the link's thread reads and acknowledges. The durable Zarr journal implements this too.
    """

    def last_seq(self) -> int:
        """The highest sequence number written (0 when empty)."""

    def unacked(self, after_seq: int) -> Iterator[tuple[int, Step]]:
        """Steps with seq > after_seq, in order (from the oldest one still kept)."""

    def ack(self, seq: int) -> None:
        """The learner has durably stored every step <= seq; the journal may release them."""


class MemoryJournal:
    """An in-memory `Journal`: steps are kept until acknowledged, so it grows while the learner is away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._steps: dict[int, Step] = {}
        self._first = 1  # oldest seq still kept
        self._last = 0

    def append(self, step: Step) -> int:
        """Add a step (do not mutate its arrays afterwards: they may still be in flight) and return its seq."""
        with self._lock:
            self._last += 1
            self._steps[self._last] = step
            return self._last

    def last_seq(self) -> int:
        return self._last

    def unacked(self, after_seq: int) -> Iterator[tuple[int, Step]]:
        seq = max(after_seq + 1, self._first)
        while True:
            with self._lock:
                step = self._steps.get(seq)
            if step is None:
                return
            yield seq, step
            seq += 1

    def ack(self, seq: int) -> None:
        with self._lock:
            while self._first <= min(seq, self._last):
                del self._steps[self._first]
                self._first += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._steps)


# ----------------------------------------------------------------------------------------------- keys


def create_keys(run_dir: str | os.PathLike, actors: Sequence[str] = ("actor-0",)) -> Path:
    """Create RUN/keys with a learner key pair and one pair per actor; return the keys folder.

    Secret key files are 0600 and the folder 0700. Existing key files are never overwritten.
    """
    keys = Path(run_dir) / "keys"
    authorized = keys / AUTHORIZED_DIR
    for name in [LEARNER_KEY_NAME, *actors]:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"key name must be letters, digits, '-' or '_', got {name!r}")
        if (keys / f"{name}.key_secret").exists():
            raise FileExistsError(f"key file {keys / (name + '.key_secret')} already exists; not overwriting it")
    if len(set(actors)) != len(actors) or LEARNER_KEY_NAME in actors:
        raise ValueError(f"actor names must be unique and not {LEARNER_KEY_NAME!r}, got {list(actors)}")
    old_umask = os.umask(0o077)  # so a secret key is never readable by others, not even for a moment
    try:
        authorized.mkdir(parents=True, exist_ok=True)
        os.chmod(keys, 0o700)
        for name in [LEARNER_KEY_NAME, *actors]:
            public_file, secret_file = zmq.auth.create_certificates(keys, name)
            os.chmod(secret_file, 0o600)
            os.chmod(public_file, 0o644)
            if name != LEARNER_KEY_NAME:
                (authorized / f"{name}.key").write_bytes(Path(public_file).read_bytes())
    finally:
        os.umask(old_umask)
    return keys


def _read_key_file(path: Path, what: str, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} key file not found: {path} (create keys with "
                                f"dojo.replay.link.create_keys(RUN, actors) and copy them here)")
    if secret:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"secret key file {path} has mode {mode:04o}; expected 0600 "
                                  f"(run: chmod 600 {path})")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {what} key file {path}: {e}") from e
    if secret and secret_key is None:
        raise ValueError(f"{what} key file {path} holds no secret key; expected a .key_secret file")
    return public, secret_key


def _load_authorized(folder: Path) -> dict[bytes, str]:
    """Public key (z85) -> actor id (the file's stem) for every key file in `folder`."""
    if not folder.is_dir():
        raise FileNotFoundError(f"authorized-keys folder not found: {folder} (expected actors' .key files there)")
    names = {}
    for path in sorted(folder.glob("*.key")):
        public, _ = _read_key_file(path, "authorized actor", secret=False)
        names[public] = path.stem
    if not names:
        raise FileNotFoundError(f"no actor keys (*.key) in authorized-keys folder {folder}")
    return names


def _parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"learner address must be HOST:PORT with a port in 1..65535, got {address!r}")
    return host, int(port)


# ------------------------------------------------------------------------------------------- encoding


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_steps(first_seq: int, epoch: int, steps: Sequence[Step]) -> list[Any]:
    """Frames for a batch of steps: one msgpack header, then each array's raw bytes."""
    descs, buffers = [], []
    for step in steps:
        arrays, scalars = [], {}
        for key, value in step.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LEN:
                raise ValueError(f"step keys must be non-empty str of <= {MAX_KEY_LEN} chars, got {key!r}")
            if isinstance(value, (str, bool, int, float)):
                if isinstance(value, str) and len(value) > MAX_STR_LEN:
                    raise ValueError(f"step[{key!r}] string longer than {MAX_STR_LEN} chars")
                scalars[key] = value
                continue
            a = np.asarray(value)
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            if a.dtype.str not in ALLOWED_DTYPES or a.ndim > MAX_NDIM:
                raise ValueError(f"step[{key!r}] has dtype {a.dtype} and {a.ndim} dims; expected a numeric/bool "
                                 f"array of <= {MAX_NDIM} dims ({sorted(ALLOWED_DTYPES)})")
            arrays.append([key, a.dtype.str, list(a.shape)])
            buffers.append(np.ascontiguousarray(a))
        descs.append({"a": arrays, "s": scalars})
    header = {"v": PROTOCOL_VERSION, "kind": "steps", "first_seq": first_seq, "epoch": epoch, "steps": descs}
    return [_pack(header), *buffers]


def _check(cond: bool, reason: str, detail: str) -> None:
    if not cond:
        raise LinkProtocolError(reason, detail)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def decode_message(frames: Sequence[Any], max_message_bytes: int, max_header_bytes: int = 1 << 20,
                   max_steps: int = 4096) -> tuple[dict[str, Any], list[Step]]:
    """Parse and validate an actor's message (frames as bytes or zmq.Frame); return (header, steps).

    Raises LinkProtocolError for anything that is not exactly a well-formed message.
    """
    _check(len(frames) >= 1, "frame_count", "empty message")
    bufs = [f.buffer if isinstance(f, zmq.Frame) else memoryview(f) for f in frames]
    total = sum(b.nbytes for b in bufs)
    _check(total <= max_message_bytes, "oversized", f"{total} bytes > limit {max_message_bytes}")
    _check(bufs[0].nbytes <= max_header_bytes, "oversized", f"header {bufs[0].nbytes} bytes > {max_header_bytes}")
    try:
        header = msgpack.unpackb(bufs[0], raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several types for garbage
        raise LinkProtocolError("bad_header", f"not msgpack: {type(e).__name__}: {e}") from None
    _check(isinstance(header, dict), "bad_header", f"header must be a map, got {type(header).__name__}")
    _check(header.get("v") == PROTOCOL_VERSION, "bad_header",
           f"protocol version {header.get('v')!r}, expected {PROTOCOL_VERSION}")
    kind = header.get("kind")
    if kind == "sync":
        _check(len(frames) == 1, "frame_count", f"sync has {len(frames)} frames, expected 1")
        _check(_is_int(header.get("params_version")), "bad_header", "sync needs an int params_version")
        return header, []
    _check(kind == "steps", "unknown_kind", f"kind {kind!r}, expected 'steps' or 'sync'")
    first_seq, epoch, descs = header.get("first_seq"), header.get("epoch"), header.get("steps")
    _check(_is_int(first_seq) and first_seq >= 1, "bad_header", f"first_seq must be an int >= 1, got {first_seq!r}")
    _check(_is_int(epoch) and epoch >= 0, "bad_header", f"epoch must be an int >= 0, got {epoch!r}")
    _check(isinstance(descs, list) and 0 < len(descs) <= max_steps, "bad_header",
           f"steps must be a list of 1..{max_steps} entries")
    n_arrays = sum(len(d.get("a", ())) if isinstance(d, dict) else 0 for d in descs)
    _check(len(frames) == 1 + n_arrays, "frame_count", f"{len(frames)} frames, header describes 1 + {n_arrays}")
    steps, i = [], 1
    for d in descs:
        _check(isinstance(d, dict) and isinstance(d.get("a"), list) and isinstance(d.get("s"), dict),
               "bad_header", "each step needs an 'a' list and an 's' map")
        step: Step = {}
        for key, value in d["s"].items():
            _check(isinstance(value, (str, bool, int, float)) and 0 < len(key) <= MAX_KEY_LEN, "bad_header",
                   f"scalar {key!r} must be str/bool/int/float")
            step[key] = value
        for desc in d["a"]:
            _check(isinstance(desc, list) and len(desc) == 3 and isinstance(desc[0], str)
                   and 0 < len(desc[0]) <= MAX_KEY_LEN and isinstance(desc[1], str) and isinstance(desc[2], list),
                   "bad_header", f"array descriptor must be [key, dtype, shape], got {desc!r:.100}")
            key, dtype, shape = desc
            _check(dtype in ALLOWED_DTYPES, "bad_dtype", f"{key!r} has dtype {dtype!r}, not in the allow-list")
            _check(len(shape) <= MAX_NDIM and all(_is_int(s) and s >= 0 for s in shape), "bad_shape",
                   f"{key!r} has shape {shape!r:.100}; expected <= {MAX_NDIM} non-negative ints")
            dt = np.dtype(dtype)
            claimed = dt.itemsize * int(np.prod(shape, dtype=np.int64)) if all(s < 2**40 for s in shape) else -1
            _check(claimed == bufs[i].nbytes, "size_mismatch",
                   f"{key!r} claims {dtype}{tuple(shape)} = {claimed} bytes, frame has {bufs[i].nbytes}")
            _check(key not in step, "bad_header", f"duplicate key {key!r}")
            step[key] = np.frombuffer(bufs[i], dtype=dt).reshape(shape)  # read-only view
            i += 1
        steps.append(step)
    return header, steps


# --------------------------------------------------------------------------------------------- server


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

    Use either `poll(timeout_s)` from your own loop, or `start()` to serve from a background thread (then
    `on_steps` runs on that thread). `publish()` and `stats()` are thread-safe.
    """

    def __init__(self, on_steps: OnSteps, keys_dir: str | os.PathLike, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, last_seq_by_actor: Mapping[str, int] | None = None,
                 max_message_bytes: int = 64 << 20, rcv_hwm: int = 64, heartbeat_s: float = 0.5,
                 timeout_s: float = 3.0):
        keys_dir = Path(keys_dir)
        public, secret = _read_key_file(keys_dir / f"{LEARNER_KEY_NAME}.key_secret", "learner secret", secret=True)
        names = _load_authorized(keys_dir / AUTHORIZED_DIR)
        self._on_steps = on_steps
        self._max_message_bytes = max_message_bytes
        self._timeout_s = timeout_s
        self._actors: dict[str, _ActorState] = {a: _ActorState(int(s)) for a, s in (last_seq_by_actor or {}).items()}
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._snapshot: Snapshot | None = None
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
                port = sock.bind_to_random_port(f"tcp://{_bracket(host)}")
            else:
                sock.bind(f"tcp://{_bracket(host)}:{port}")
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
        return f"{_bracket(self.host)}:{self.port}"

    # -- public API --

    def publish(self, blob: bytes, version: int, metadata: Mapping[str, Any] | None = None) -> None:
        """Offer a new parameter snapshot; actors that report an older version receive it (once).

        `metadata` must be msgpack-able (str, numbers, bools, None, lists, maps). Actors refuse blobs over
        their `max_params_bytes`.
        """
        metadata = dict(metadata or {})
        try:
            _pack(metadata)  # fail here, in the caller's thread, if it cannot travel
        except TypeError as e:
            raise ValueError(f"snapshot metadata must be msgpack-able: {e}") from None
        with self._lock:
            current = self._snapshot.version if self._snapshot else -1
            if not _is_int(version) or version <= current:
                raise ValueError(f"snapshot version must be an int > the last published ({current}), got {version!r}")
            self._snapshot = Snapshot(version, bytes(blob), metadata)
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
        return handled

    def start(self) -> LinkServer:
        """Serve from a background thread until `close()`."""
        if self._thread is not None:
            raise RuntimeError("LinkServer.start() called twice")

        def serve() -> None:
            while not self._stop.is_set():
                self.poll(0.005)
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
        try:
            self._sock.send_multipart([identity, _pack(header), *extra], zmq.NOBLOCK, copy=False)
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
        if header["kind"] == "sync":
            state.params_version = header["params_version"]
            self._serve_params(state, now, reply_anyway=True)
        else:
            self._store(actor_id, state, identity, header, steps)

    def _store(self, actor_id: str, state: _ActorState, identity: bytes, header: dict[str, Any],
               steps: list[Step]) -> None:
        first, last, epoch = header["first_seq"], state.last_seq, header["epoch"]
        if first > last + 1:
            self._count("gaps_refused")
            self._reply(identity, {"kind": "ack", "acked_seq": last, "epoch": epoch, "refused": "gap"})
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
                self._reply(identity, {"kind": "ack", "acked_seq": last, "epoch": epoch, "refused": "hook_error"})
                return
            with self._lock:
                state.last_seq = last + len(new)
                self._counts["steps_stored"] += len(new)
        self._reply(identity, {"kind": "ack", "acked_seq": state.last_seq, "epoch": epoch, "refused": None})

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


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --------------------------------------------------------------------------------------------- client


@dataclasses.dataclass(frozen=True)
class LinkStatus:
    """What the actor knows about its link, for logs and progress displays."""

    connected: bool  # heard from the learner within timeout_s
    silent_for_s: float  # since the learner was last heard from (or since the client started)
    auth_rejected: bool  # the learner refused this actor's key at the last handshake
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
    sequence per key.
    """

    def __init__(self, journal: Journal, learner: str, keys_dir: str | os.PathLike, actor: str = "actor-0",
                 max_inflight: int = 4, batch_steps: int = 32, batch_bytes: int = 4 << 20,
                 heartbeat_s: float = 0.5, timeout_s: float = 3.0, params_version: int = -1,
                 max_params_bytes: int = 1 << 30):
        if max_inflight < 1 or batch_steps < 1:
            raise ValueError(f"max_inflight and batch_steps must be >= 1, got {max_inflight}, {batch_steps}")
        keys_dir = Path(keys_dir)
        public, secret = _read_key_file(keys_dir / f"{actor}.key_secret", f"actor {actor!r} secret", secret=True)
        server_public, _ = _read_key_file(keys_dir / f"{LEARNER_KEY_NAME}.key", "learner public", secret=False)
        host, port = _parse_address(learner)
        self.actor, self.learner = actor, learner
        self._journal = journal
        self._max_inflight, self._batch_steps, self._batch_bytes = max_inflight, batch_steps, batch_bytes
        self._heartbeat_s, self._timeout_s = heartbeat_s, timeout_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._params_version = params_version
        self._acked = 0
        self._sent = 0
        self._epoch = 0
        self._inflight: collections.deque[tuple[int, float]] = collections.deque()  # (last seq, sent at)
        self._max_inflight_seen = 0
        self._rewinds = 0
        self._errors: collections.Counter[str] = collections.Counter()
        self._auth_rejected = False
        self._started_s = time.monotonic()
        self._last_heard_s = self._started_s - timeout_s  # "not connected" until the learner answers
        self._reported_unreachable = False
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
            sock.connect(f"tcp://{_bracket(host.strip('[]'))}:{port}")
        except zmq.ZMQError as e:
            sock.close()
            self._ctx.term()
            raise ValueError(f"cannot connect to learner address {learner!r}: {e.strerror}") from None
        self._sock = sock
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self._thread = threading.Thread(target=self._run, name="dojo-link-client", daemon=True)
        self._thread.start()

    # -- control-loop API (non-blocking) --

    def latest_params(self) -> Snapshot | None:
        """The newest parameter snapshot received, or None."""
        with self._lock:
            return self._snapshot

    def status(self) -> LinkStatus:
        now = time.monotonic()
        with self._lock:
            return LinkStatus(
                connected=now - self._last_heard_s < self._timeout_s,
                silent_for_s=now - max(self._last_heard_s, self._started_s),
                auth_rejected=self._auth_rejected, acked_seq=self._acked, sent_seq=self._sent,
                journal_seq=self._journal.last_seq(), inflight=len(self._inflight),
                max_inflight_seen=self._max_inflight_seen, rewinds=self._rewinds,
                params_version=self._params_version, errors=dict(self._errors))

    def close(self) -> None:
        self._stop.set()
        join_thread(self._thread, 30.0, "the actor link's client thread")
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
        last_sync_s = -1e9
        try:
            while not self._stop.is_set():
                # A short poll: new journal steps are noticed within a few ms without a wake-up channel.
                events = dict(poller.poll(5))
                if self._monitor in events:
                    self._drain_monitor()
                self._receive()
                now = time.monotonic()
                if self._inflight and now - self._inflight[0][1] > self._timeout_s:
                    self._rewind(f"no ack for {self._timeout_s:.1f} s")
                if now - last_sync_s >= self._heartbeat_s:
                    if self._try_send([_pack({"v": PROTOCOL_VERSION, "kind": "sync",
                                              "params_version": self._params_version})]):
                        last_sync_s = now
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
        _check(isinstance(header, dict), "bad_header", "reply header must be a map")
        kind = header["kind"]
        acked = header.get("acked_seq", 0)
        _check(_is_int(acked), "bad_header", f"acked_seq must be an int, got {acked!r}")
        with self._lock:
            self._last_heard_s = time.monotonic()
            newly_acked = acked > self._acked
            if newly_acked:
                self._acked = acked
                # After an actor restart the learner may hold more than this client sent: start after it.
                self._sent = max(self._sent, acked)
                while self._inflight and self._inflight[0][0] <= acked:
                    self._inflight.popleft()
        if newly_acked:
            self._journal.ack(acked)
        if kind == "ack" and header.get("refused"):
            if header["refused"] == "gap" and header.get("epoch") == self._epoch:
                if acked < self._acked:
                    log.error("learner holds only up to seq %d but had acknowledged %d: it lost steps", acked,
                              self._acked)
                    with self._lock:
                        self._acked = acked
                self._rewind(f"learner holds up to seq {acked}")
            # a hook_error is retried after timeout_s, which paces retries against a failing store
        elif kind == "params":
            _check(len(frames) == 2 and _is_int(header.get("version")), "bad_header",
                   "params needs a version and a blob")
            with self._lock:
                if header["version"] > self._params_version:
                    self._snapshot = Snapshot(header["version"], frames[1], dict(header.get("metadata") or {}))
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
            with self._lock:
                rejected = event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                if rejected and not self._auth_rejected:
                    log.error("learner at %s rejected this actor's key (%s): is %s.key in its authorized folder?",
                              self.learner, self.actor, self.actor)
                if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                    self._errors["handshake_failed_protocol"] += 1
                self._auth_rejected = rejected

    def _report_connectivity(self, now: float) -> None:
        silent_s = now - max(self._last_heard_s, self._started_s)  # a new client gets timeout_s to connect
        unacked = self._journal.last_seq() - self._acked
        if silent_s >= self._timeout_s and not self._reported_unreachable:
            self._reported_unreachable = True
            log.warning("learner at %s unreachable (silent %.1f s); acting on, %d steps unacked in the journal",
                        self.learner, silent_s, unacked)
        elif silent_s < self._timeout_s and self._reported_unreachable:
            self._reported_unreachable = False
            log.info("learner at %s reachable again; %d steps to send", self.learner, unacked)
