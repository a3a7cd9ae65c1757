"""The link's wire format: msgpack headers plus raw numpy buffers as separate frames, never pickle.

Frames of one multipart message, actor -> learner:

    steps:  header {v, kind: "steps", first_seq, epoch, steps: [{a: [[key, dtype, shape], ...],
            s: {key: scalar}}, ...]}, then one frame per array, in order
    sync:   header {v, kind: "sync", params_version, actor, schema}   (heartbeat; asks for newer
            parameters; `schema` {key: [shape, dtype]} is what this actor's steps hold)
    score:  header {v, kind: "score", id, steps: [one step as above]}, then its arrays: camera frames (and
            state) for the learner's reward service to label (dojo.rewards.service)

learner -> actor: {kind: "ack" | "pong" | "error" | "refused", acked_seq, ...}, or {kind: "params",
version, metadata, acked_seq} followed by the parameter blob. Acks and pongs carry the learner's `status`
(e.g. how far the actors run ahead of its updates). A score request is answered by {kind: "score", id,
value, success, source} or {kind: "score", id, error}. "refused" (keys, an id or arrays that do not fit the
run) is final: the actor stops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
import zmq

PROTOCOL_VERSION = 2

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
Schema = dict[str, tuple[tuple[int, ...], str]]  # array key -> (shape, dtype str), e.g. {"obs/state": ((24,), "<f4")}


class LinkProtocolError(ValueError):
    """A message that breaks the wire format; `reason` is a short category used in the counters."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class PublishedParams:
    """A versioned parameter snapshot on the link: opaque bytes (a policy snapshot) plus metadata."""

    version: int
    blob: bytes
    metadata: dict[str, Any]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def make_schema(arrays: Mapping[str, tuple[Sequence[int], Any]]) -> Schema:
    """{key: (shape, dtype)} in the wire's canonical form (little-endian dtype strings, int tuples)."""
    return {k: (tuple(int(s) for s in shape), np.dtype(dtype).newbyteorder("<").str)
            for k, (shape, dtype) in arrays.items()}


def _decode_schema(raw: Any) -> Schema:
    require(isinstance(raw, dict) and len(raw) <= 64, "bad_header", "schema must be a map of at most 64 keys")
    out = {}
    for key, desc in raw.items():
        require(isinstance(key, str) and 0 < len(key) <= MAX_KEY_LEN and isinstance(desc, list) and len(desc) == 2
               and isinstance(desc[0], list) and len(desc[0]) <= MAX_NDIM
               and all(is_int(s) and s >= 0 for s in desc[0]) and desc[1] in ALLOWED_DTYPES,
               "bad_header", f"schema entry {key!r} must be [shape, dtype], got {desc!r:.100}")
        out[key] = (tuple(desc[0]), desc[1])
    return out


def schema_mismatch(expected: Schema, got: Mapping[str, tuple[Sequence[int], Any]],
                    who: str = "the actor") -> str | None:
    """What differs between the run's schema and `got` (an actor's schema or one step's arrays), or None.

    Shapes must be equal; a dtype may differ only where the store converts it (any number into a float
    key), as the store itself allows."""
    got = make_schema(got)
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    if missing or extra:
        parts = ([f"lacks {missing}"] if missing else []) + ([f"has {extra} as well"] if extra else [])
        run = ", ".join(f"{k} {_shape_dtype(*v)}" for k, v in sorted(expected.items()))
        return f"{who} {' and '.join(parts)}; the run expects {run}"
    for key, (shape, dtype) in expected.items():
        got_shape, got_dtype = got[key]
        castable = got_dtype == dtype or (np.dtype(dtype).kind == "f" and np.dtype(got_dtype).kind in "fiub")
        if got_shape != shape or not castable:
            return f"{key} is {_shape_dtype(*got[key])} on {who}, the run expects {_shape_dtype(shape, dtype)}"
    return None


def _shape_dtype(shape: Sequence[int], dtype: str) -> str:
    return f"{tuple(shape)} {np.dtype(dtype).name}"


def encode_steps(first_seq: int, epoch: int, steps: Sequence[Step]) -> list[Any]:
    """Frames for a batch of steps: one msgpack header, then each array's raw bytes."""
    return _encode({"v": PROTOCOL_VERSION, "kind": "steps", "first_seq": first_seq, "epoch": epoch}, steps)


def encode_score(request_id: int, inputs: Step) -> list[Any]:
    """Frames asking the learner's reward service to label one frame set: `inputs` holds the cameras' uint8
    frames (and "state"); its "instruction" str travels in the header."""
    return _encode({"v": PROTOCOL_VERSION, "kind": "score", "id": request_id}, [inputs])


def _encode(header: dict[str, Any], steps: Sequence[Step]) -> list[Any]:
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
    return [pack({**header, "steps": descs}), *buffers]


def require(cond: bool, reason: str, detail: str) -> None:
    if not cond:
        raise LinkProtocolError(reason, detail)


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def decode_message(frames: Sequence[Any], max_message_bytes: int, max_header_bytes: int = 1 << 20,
                   max_steps: int = 4096) -> tuple[dict[str, Any], list[Step]]:
    """Parse and validate an actor's message (frames as bytes or zmq.Frame); return (header, steps).

    Raises LinkProtocolError for anything that is not exactly a well-formed message.
    """
    require(len(frames) >= 1, "frame_count", "empty message")
    bufs = [f.buffer if isinstance(f, zmq.Frame) else memoryview(f) for f in frames]
    total = sum(b.nbytes for b in bufs)
    require(total <= max_message_bytes, "oversized", f"{total} bytes > limit {max_message_bytes}")
    require(bufs[0].nbytes <= max_header_bytes, "oversized", f"header {bufs[0].nbytes} bytes > {max_header_bytes}")
    try:
        header = msgpack.unpackb(bufs[0], raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises several types for garbage
        raise LinkProtocolError("bad_header", f"not msgpack: {type(e).__name__}: {e}") from None
    require(isinstance(header, dict), "bad_header", f"header must be a map, got {type(header).__name__}")
    require(header.get("v") == PROTOCOL_VERSION, "bad_header",
           f"protocol version {header.get('v')!r}, expected {PROTOCOL_VERSION}")
    kind = header.get("kind")
    if kind == "sync":
        require(len(frames) == 1, "frame_count", f"sync has {len(frames)} frames, expected 1")
        require(is_int(header.get("params_version")), "bad_header", "sync needs an int params_version")
        require(isinstance(header.get("actor", ""), str), "bad_header", "sync's actor must be a str")
        schema = header.get("schema")
        if schema is not None:
            header["schema"] = _decode_schema(schema)
        return header, []
    require(kind in ("steps", "score"), "unknown_kind", f"kind {kind!r}, expected 'steps', 'sync' or 'score'")
    descs = header.get("steps")
    if kind == "score":
        require(is_int(header.get("id")), "bad_header", "score needs an int id")
        max_steps = 1
    else:
        first_seq, epoch = header.get("first_seq"), header.get("epoch")
        require(is_int(first_seq) and first_seq >= 1, "bad_header",
                f"first_seq must be an int >= 1, got {first_seq!r}")
        require(is_int(epoch) and epoch >= 0, "bad_header", f"epoch must be an int >= 0, got {epoch!r}")
    require(isinstance(descs, list) and 0 < len(descs) <= max_steps, "bad_header",
           f"steps must be a list of 1..{max_steps} entries")
    n_arrays = sum(len(d.get("a", ())) if isinstance(d, dict) else 0 for d in descs)
    require(len(frames) == 1 + n_arrays, "frame_count", f"{len(frames)} frames, header describes 1 + {n_arrays}")
    steps, i = [], 1
    for d in descs:
        require(isinstance(d, dict) and isinstance(d.get("a"), list) and isinstance(d.get("s"), dict),
               "bad_header", "each step needs an 'a' list and an 's' map")
        step: Step = {}
        for key, value in d["s"].items():
            require(isinstance(value, (str, bool, int, float)) and 0 < len(key) <= MAX_KEY_LEN, "bad_header",
                   f"scalar {key!r} must be str/bool/int/float")
            step[key] = value
        for desc in d["a"]:
            require(isinstance(desc, list) and len(desc) == 3 and isinstance(desc[0], str)
                   and 0 < len(desc[0]) <= MAX_KEY_LEN and isinstance(desc[1], str) and isinstance(desc[2], list),
                   "bad_header", f"array descriptor must be [key, dtype, shape], got {desc!r:.100}")
            key, dtype, shape = desc
            require(dtype in ALLOWED_DTYPES, "bad_dtype", f"{key!r} has dtype {dtype!r}, not in the allow-list")
            require(len(shape) <= MAX_NDIM and all(is_int(s) and s >= 0 for s in shape), "bad_shape",
                   f"{key!r} has shape {shape!r:.100}; expected <= {MAX_NDIM} non-negative ints")
            dt = np.dtype(dtype)
            claimed = dt.itemsize * int(np.prod(shape, dtype=np.int64)) if all(s < 2**40 for s in shape) else -1
            require(claimed == bufs[i].nbytes, "size_mismatch",
                   f"{key!r} claims {dtype}{tuple(shape)} = {claimed} bytes, frame has {bufs[i].nbytes}")
            require(key not in step, "bad_header", f"duplicate key {key!r}")
            step[key] = np.frombuffer(bufs[i], dtype=dt).reshape(shape)  # read-only view
            i += 1
        steps.append(step)
    return header, steps


