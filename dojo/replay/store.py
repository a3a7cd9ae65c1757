"""The durable episode store: a Zarr v3 group that a live actor appends to while learners read it.

Crash safety rests on one rule: readers trust only the commit record in the group's attributes,
and the writer replaces it (atomically) only after every row it counts is on disk. See FORMAT.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import fcntl
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

FORMAT_VERSION = 1
SOURCES = ("demo", "online", "intervention", "prior")  # index = int8 code in sampled batches
STEP_DTYPES = {
    "reward": np.float32,
    "terminal": np.bool_,
    "truncated": np.bool_,
    "intervened": np.bool_,
    "mc_return": np.float32,
}  # plus "action" (float32, (A,)) and one array per observation key
META_DTYPES = {
    "start_row": np.int64,
    "stop_row": np.int64,  # one past the episode's last row
    "finished": np.bool_,  # False: the writer died mid-episode and a later writer closed it
    "success": np.bool_,
    "start_time_s": np.float64,  # unix time
    "source": str,
    "task": str,
    "instruction": str,
    "operator": str,
    "robot": str,
    "calibration_id": str,
    "reset_seed": np.int64,  # the seed the env was reset with; -1 when unknown
    "reward_source": str,  # what produced the stored rewards: "" (the recording env), or "<kind>:<model id>"
    "reward_missed": np.int64,  # labels a reward service did not return in time (their steps got reward 0)
    "reset": str,  # how the scene was reset before the episode: "" (the env's reset), "free" or "human"
}
# Fields added after the first stores were written: a store without the array reads as these values,
# and the next writer to open it adds the array.
META_DEFAULTS = {"reset_seed": -1, "reward_source": "", "reward_missed": 0, "reset": ""}
RESETS = ("", "free", "human")  # meta/reset: the env's own reset, reset-free (practice), a person's
META_STRINGS = tuple(k for k, v in META_DTYPES.items() if v is str)
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CHUNK_TARGET_BYTES = 1 << 20  # ~1 MiB uncompressed per chunk: few files, cheap partial rewrites
_MAX_CHUNK_ROWS = 4096
# Arrays grow in steps of this many rows, not at every commit: a resize rewrites (and fsyncs) the array's
# zarr.json, which would double the files a one-step commit touches. Readers go by the commit record.
_GROW_ROWS = 1024
_ACTION_TOLERANCE = 1e-5


class StoreError(Exception):
    """The store on disk is missing, inconsistent or corrupt; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    """One episode's metadata. Rows [start_row, stop_row) hold its observations."""

    index: int
    start_row: int
    stop_row: int
    finished: bool
    success: bool
    source: str
    task: str = ""
    instruction: str = ""
    operator: str = ""
    robot: str = ""
    calibration_id: str = ""
    start_time_s: float = 0.0
    reset_seed: int = -1  # the seed the environment was reset with; -1 when unknown
    reward_source: str = ""  # "" = the recording env's reward; "<kind>:<model id>" after `dojo replay relabel`
    reward_missed: int = 0  # labels the reward service did not return within its deadline
    reset: str = ""  # "" = the env's own reset; "free" = the scene as the last attempt left it; "human" = a person's

    @property
    def num_steps(self) -> int:
        """Transitions with a following observation: every row but the last."""
        return self.stop_row - self.start_row - 1


@dataclasses.dataclass
class Episode:
    """One episode's arrays: `obs[key]` has num_steps + 1 rows, the per-step fields num_steps."""

    info: EpisodeInfo
    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    terminal: np.ndarray
    truncated: np.ndarray
    intervened: np.ndarray
    mc_return: np.ndarray


def mc_return_to_go(
    reward: np.ndarray, terminal: np.ndarray, gamma: float, failure_reward: float | None = None
) -> np.ndarray:
    """Discounted return-to-go G_t = r_t + gamma * (1 - terminal_t) * G_{t+1}, with Cal-QL's rule:
    an episode whose every reward equals `failure_reward` (a sparse-reward failure) gets
    failure_reward / (1 - gamma) at every step, the value of failing forever, so that a short
    failed episode does not look better than a long one."""
    reward = np.asarray(reward, dtype=np.float64)
    terminal = np.asarray(terminal, dtype=bool)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    if failure_reward is not None and reward.size and np.all(reward == failure_reward):
        return np.full(reward.shape, failure_reward / (1.0 - gamma), dtype=np.float32)
    out = np.zeros(reward.shape, dtype=np.float64)
    running = 0.0
    for t in range(reward.size - 1, -1, -1):
        running = reward[t] + gamma * running * (0.0 if terminal[t] else 1.0)
        out[t] = running
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Low-level helpers


class _DurableLocalStore(LocalStore):
    """A LocalStore that fsyncs each file before its atomic rename and remembers the directories
    it touched, so a commit can make them durable too. zarr's own LocalStore renames atomically
    (enough against SIGKILL) but without fsync (not enough against a power cut)."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.dirty_dirs: set[Path] = set()

    async def set(self, key: str, value: Any) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(self._put_durable, key, value)

    def set_sync(self, key: str, value: Any) -> None:
        self._ensure_open_sync()
        self._check_writable()
        self._put_durable(key, value)

    def _put_durable(self, key: str, value: Any) -> None:
        path = self.root / key
        missing = path.parent
        while not missing.exists():
            self.dirty_dirs.add(missing.parent)  # a new directory entry lives in its parent
            missing = missing.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        with open(tmp, "wb") as f:
            f.write(value.as_buffer_like())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.dirty_dirs.add(path.parent)

    def sync_dirs(self, pool: concurrent.futures.Executor) -> None:
        dirs, self.dirty_dirs = self.dirty_dirs, set()
        list(pool.map(_fsync_dir, dirs))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wrap(what: str, fn: Callable[[], Any]) -> Any:
    """Run a zarr call; turn any failure into a StoreError that says which part of the store broke."""
    try:
        return fn()
    except StoreError:
        raise
    except Exception as err:  # zarr raises many types (JSON, codec, KeyError...): name the place
        raise StoreError(f"{what}: {type(err).__name__}: {err}") from err


def _chunk_rows(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    rows = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_TARGET_BYTES // row_bytes))
    return 1 << (rows.bit_length() - 1)  # a power of two


def _compressor(row_shape: tuple[int, ...], dtype: np.dtype) -> BloscCodec:
    if np.dtype(dtype) == np.uint8 and len(row_shape) >= 2:
        # Images: on camera-like frames bit-shuffle + lz4 encodes ~2x faster than bit-shuffle +
        # zstd for ~10% more bytes; without bit-shuffle neither compresses noisy pixels at all.
        return BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")


def _row_arrays(spec: Mapping[str, tuple[tuple[int, ...], np.dtype]], action_dim: int) -> dict:
    """Every per-row array of the store: name -> (row shape, dtype)."""
    arrays = {f"obs/{k}": (tuple(shape), np.dtype(dt)) for k, (shape, dt) in spec.items()}
    arrays["action"] = ((action_dim,), np.dtype(np.float32))
    arrays.update({k: ((), np.dtype(dt)) for k, dt in STEP_DTYPES.items()})
    return arrays


def _spec_from_attrs(attrs: dict) -> tuple[dict, int] | tuple[None, None]:
    spec = attrs.get("obs_spec")
    if spec is None:
        return None, None
    return {k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in spec.items()}, int(attrs["action_dim"])


def _normalise_spec(obs_spec: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Accept {key: (shape, dtype)} or {key: Box-like with .shape/.dtype} (a gymnasium Dict works)."""
    if hasattr(obs_spec, "spaces"):
        obs_spec = obs_spec.spaces
    out = {}
    for key, item in obs_spec.items():
        shape, dtype = (item.shape, item.dtype) if hasattr(item, "shape") else item
        out[_check_key(key)] = (tuple(int(s) for s in shape), _storage_dtype(np.dtype(dtype)))
    if not out:
        raise ValueError("obs_spec must have at least one observation key, got none")
    return out


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(
            f"observation key {key!r} is not allowed: expected a name of letters, digits, '_', '.', '-'"
        )
    return key


def _storage_dtype(dtype: np.dtype) -> np.dtype:
    # float64 state from numpy maths is stored as float32, the dtype learners consume.
    return np.dtype(np.float32) if dtype == np.float64 else dtype


def _read_commit(path: Path) -> tuple[zarr.Group, dict, dict]:
    """Open the group and return (group, format attrs, commit record), checked for shape."""
    if not path.is_dir():
        raise StoreError(f"no replay store at {path}: directory does not exist")
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path} is not a Zarr store: {path / 'zarr.json'} is missing")
    group = _wrap(
        f"{path}/zarr.json: cannot read the group metadata (and commit record)",
        lambda: zarr.open_group(store=LocalStore(path, read_only=True), mode="r"),
    )
    attrs = group.attrs.asdict()
    fmt, commit = attrs.get("dojo_replay"), attrs.get("commit")
    if not isinstance(fmt, dict):
        raise StoreError(f"{path} is not a dojo replay store: group attribute 'dojo_replay' is missing")
    if fmt.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: format_version {fmt.get('format_version')!r} is not supported, expected {FORMAT_VERSION}"
        )
    if not isinstance(commit, dict):
        raise StoreError(f"{path}: the commit record (group attribute 'commit') is missing")
    for field in ("rows", "episodes", "sequence", "discards"):
        value = commit.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StoreError(f"{path}: commit record field {field!r} is {value!r}, expected an integer >= 0")
    open_ep = commit.get("open_episode")
    if open_ep is not None and not (isinstance(open_ep, dict) and isinstance(open_ep.get("start_row"), int)):
        raise StoreError(f"{path}: commit record 'open_episode' is {open_ep!r}, expected null or a dict with start_row")
    return group, fmt, commit


def _store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------------------------
# Reading


class StoreReader:
    """Reads a store and follows it while a writer appends (call `refresh`).

    Opening checks the store's consistency (metadata, lengths, episode table, chunk files) and
    raises StoreError naming the problem; `verify()` also decodes every committed chunk.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._arrays: dict[str, zarr.Array] = {}
        self.episodes: list[EpisodeInfo] = []
        self.num_rows = 0
        self.sequence = -1
        self._load(check_all_chunks=True)

    # -- state -------------------------------------------------------------------------------
    @property
    def num_episodes(self) -> int:
        """Closed episodes (finished, or marked unfinished after a writer crash)."""
        return len(self.episodes)

    @property
    def num_steps(self) -> int:
        return sum(e.num_steps for e in self.episodes)

    @property
    def obs_keys(self) -> tuple[str, ...]:
        return tuple(self.obs_spec) if self.obs_spec else ()

    def refresh(self) -> int:
        """Re-read the commit record; return the change in committed rows (negative only when
        the writer discarded rows of its still-open episode)."""
        before = self.num_rows
        self._load(check_all_chunks=False)
        return self.num_rows - before

    def _load(self, check_all_chunks: bool) -> None:
        group, fmt, commit = _read_commit(self.path)
        if commit["sequence"] == self.sequence:
            return
        rows, n_eps = commit["rows"], commit["episodes"]
        self.format_attrs = fmt
        self.obs_spec, self.action_dim = _spec_from_attrs(fmt)
        self.mc_gamma = float(fmt["mc_gamma"])
        self.failure_reward = fmt.get("failure_reward")
        if rows > 0 and self.obs_spec is None:
            raise StoreError(f"{self.path}: {rows} rows are committed but the observation spec is missing")
        self.open_episode = commit.get("open_episode")
        old_eps = len(self.episodes)
        if n_eps < old_eps or (self.episodes and rows < self.episodes[-1].stop_row):
            raise StoreError(f"{self.path}: the commit record went backwards (closed episodes {old_eps} -> {n_eps})")
        missing = {k for k in META_DEFAULTS if not (self.path / "meta" / k / "zarr.json").is_file()}
        arrays = {f"meta/{k}": None for k in META_DTYPES if k not in missing}
        if self.obs_spec is not None:
            arrays.update({f"data/{k}": None for k in _row_arrays(self.obs_spec, self.action_dim)})
        for name in arrays:
            arrays[name] = self._array(name, need=n_eps if name.startswith("meta/") else rows)
        self._check_shapes(arrays, rows, n_eps)
        first_new_row = self.episodes[-1].stop_row if self.episodes else 0
        start = 0 if check_all_chunks else old_eps
        for name, arr in arrays.items():
            lo, hi = (start, n_eps) if name.startswith("meta/") else (0 if check_all_chunks else first_new_row, rows)
            self._check_chunks(name, arr, lo, hi)
        new = {k: np.full(n_eps - old_eps, META_DEFAULTS[k]) if k in missing
               else self._read(f"meta/{k}", old_eps, n_eps) for k in META_DTYPES}
        for i in range(n_eps - old_eps):
            values = {k: new[k][i] for k in META_DTYPES}
            for k in META_STRINGS:
                values[k] = str(values[k])
            for k in ("start_row", "stop_row", "reset_seed", "reward_missed"):
                values[k] = int(values[k])
            for k in ("finished", "success"):
                values[k] = bool(values[k])
            values["start_time_s"] = float(values["start_time_s"])
            self.episodes.append(EpisodeInfo(index=old_eps + i, **values))
        self._check_episode_table(old_eps, rows)
        self.num_rows, self.sequence, self.discards = rows, commit["sequence"], commit["discards"]

    def _array(self, name: str, need: int) -> zarr.Array:
        arr = self._arrays.get(name)
        if arr is None or arr.shape[0] < need:  # a stale handle knows an old shape: reopen
            if not (self.path / name / "zarr.json").is_file():
                raise StoreError(f"{self.path}: array {name} is missing ({self.path / name / 'zarr.json'} not found)")
            arr = _wrap(f"{self.path}/{name}: cannot open the array",
                        lambda: zarr.open_array(store=LocalStore(self.path, read_only=True), path=name, mode="r"))
            self._arrays[name] = arr
        return arr

    def _check_shapes(self, arrays: dict[str, zarr.Array], rows: int, n_eps: int) -> None:
        expected = {f"meta/{k}": ((), v) for k, v in META_DTYPES.items()}
        if self.obs_spec is not None:
            expected.update({f"data/{k}": v for k, v in _row_arrays(self.obs_spec, self.action_dim).items()})
        for name, arr in arrays.items():
            need = n_eps if name.startswith("meta/") else rows
            what = "closed episodes" if name.startswith("meta/") else "committed rows"
            row_shape, dtype = expected[name]
            if arr.shape[0] < need:
                raise StoreError(
                    f"{self.path}: {name} has {arr.shape[0]} rows but the commit record says {need} {what}"
                )
            if tuple(arr.shape[1:]) != tuple(row_shape):
                raise StoreError(f"{self.path}: {name} has row shape {arr.shape[1:]}, expected {row_shape}")
            kind_ok = (arr.dtype.kind in "OTU" or str(arr.dtype).startswith("Str")) if dtype is str \
                else np.dtype(arr.dtype) == np.dtype(dtype)
            if not kind_ok:
                raise StoreError(f"{self.path}: {name} has dtype {arr.dtype}, expected {dtype}")

    def _check_chunks(self, name: str, arr: zarr.Array, lo: int, hi: int) -> None:
        """zarr silently returns the fill value for a missing chunk file: look for each one."""
        if hi <= lo:
            return
        c = arr.chunks[0]
        zeros = (0,) * (arr.ndim - 1)
        for i in range(lo // c, (hi - 1) // c + 1):
            key = arr.metadata.encode_chunk_key((i, *zeros))
            if not (self.path / name / key).is_file():
                raise StoreError(
                    f"{self.path}: {name} chunk {key} (rows {i * c}:{(i + 1) * c}) is missing, "
                    f"but rows up to {hi} are committed"
                )

    def _check_episode_table(self, first: int, rows: int) -> None:
        prev_stop = self.episodes[first - 1].stop_row if first > 0 else 0
        for ep in self.episodes[first:]:
            if ep.start_row != prev_stop:
                raise StoreError(
                    f"{self.path}: episode {ep.index} starts at row {ep.start_row}, expected {prev_stop} "
                    "(episodes must be contiguous)"
                )
            min_rows = 2 if ep.finished else 1
            if ep.stop_row - ep.start_row < min_rows or ep.stop_row > rows:
                raise StoreError(
                    f"{self.path}: episode {ep.index} has rows {ep.start_row}:{ep.stop_row}, expected at least "
                    f"{min_rows} rows ending at or before the {rows} committed rows"
                )
            if ep.source not in SOURCES:
                raise StoreError(f"{self.path}: episode {ep.index} has source {ep.source!r}, expected one of {SOURCES}")
            prev_stop = ep.stop_row
        open_start = self.open_episode["start_row"] if self.open_episode else rows
        if prev_stop != open_start or (self.open_episode and rows <= open_start):
            raise StoreError(
                f"{self.path}: closed episodes end at row {prev_stop} but the open episode starts at "
                f"{open_start} of {rows} committed rows"
            )

    # -- data --------------------------------------------------------------------------------
    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        arr = self._arrays[name]
        return _wrap(f"{self.path}/{name} rows {start}:{stop}: cannot read", lambda: arr[start:stop])

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Committed rows of one per-row array: 'obs/<key>', 'action', 'reward', ... ."""
        stop = self.num_rows if stop is None else stop
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"rows {start}:{stop} are out of the committed range 0:{self.num_rows}")
        if f"data/{key}" not in self._arrays:
            raise KeyError(f"{key!r} is not an array of this store; it has {sorted(self._data_keys())}")
        return self._read(f"data/{key}", start, stop)

    def read_rows(self, keys: tuple[str, ...], start: int, stop: int | None = None) -> dict[str, np.ndarray]:
        """Committed rows [start, stop) of several arrays, safe against a writer that discards
        its open episode meanwhile (it wipes those rows): re-reads the commit record after
        reading, and reads again if a discard happened (a seqlock)."""
        for _ in range(100):
            discards = self.discards
            rows = {k: self.read(k, start, min(self.num_rows, self.num_rows if stop is None else stop))
                    for k in keys}
            self._load(check_all_chunks=False)
            if self.discards == discards:
                return rows
            start = min(start, self.num_rows)
        raise StoreError(f"{self.path}: the writer keeps discarding rows faster than they can be read")

    def _data_keys(self) -> list[str]:
        return [k[5:] for k in self._arrays if k.startswith("data/")]

    def read_episodes(self, first: int, stop: int, obs_keys: tuple[str, ...] | None = None) -> list[Episode]:
        """Closed episodes [first, stop), read in one pass per array."""
        eps = self.episodes[first:stop]
        if not eps:
            return []
        lo, hi = eps[0].start_row, eps[-1].stop_row
        keys = self.obs_keys if obs_keys is None else obs_keys
        for k in keys:
            if k not in self.obs_keys:
                raise KeyError(f"observation key {k!r} is not in this store; it has {self.obs_keys}")
        block = {f"obs/{k}": self.read(f"obs/{k}", lo, hi) for k in keys}
        for k in ("action", *STEP_DTYPES):
            block[k] = self.read(k, lo, hi)
        out = []
        for ep in eps:
            a, b = ep.start_row - lo, ep.stop_row - lo
            steps = {k: block[k][a:b - 1] for k in ("action", *STEP_DTYPES)}
            obs = {k: block[f"obs/{k}"][a:b] for k in keys}
            out.append(Episode(info=ep, obs=obs, **steps))
        return out

    def episode(self, index: int) -> Episode:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"episode {index} does not exist; the store has {self.num_episodes} closed episodes")
        return self.read_episodes(index, index + 1)[0]

    def verify(self) -> None:
        """Deep check: decode every committed chunk and check the per-step fields' invariants."""
        self._load(check_all_chunks=True)
        for name in list(self._arrays):
            need = self.num_episodes if name.startswith("meta/") else self.num_rows
            arr = self._arrays[name]
            for lo in range(0, need, arr.chunks[0]):
                self._read(name, lo, min(need, lo + arr.chunks[0]))
        for first in range(0, self.num_episodes, 256):
            for ep in self.read_episodes(first, first + 256, obs_keys=()):
                self._verify_episode(ep)

    def _verify_episode(self, ep: Episode) -> None:
        where = f"{self.path}: episode {ep.info.index} (rows {ep.info.start_row}:{ep.info.stop_row})"
        if not (np.all(np.isfinite(ep.reward)) and np.all(np.isfinite(ep.action))):
            raise StoreError(f"{where}: non-finite reward or action")
        ends = ep.terminal[:-1] | ep.truncated[:-1]
        if ep.info.finished and np.any(ends):
            raise StoreError(f"{where}: terminal/truncated at step {int(np.argmax(ends))} before the last step")
        expected = self._expected_mc(ep)
        if not np.allclose(ep.mc_return, expected, rtol=1e-4, atol=1e-4):
            bad = int(np.argmax(~np.isclose(ep.mc_return, expected, rtol=1e-4, atol=1e-4)))
            raise StoreError(f"{where}: mc_return[{bad}] is {ep.mc_return[bad]}, expected {expected[bad]}")

    def _expected_mc(self, ep: Episode) -> np.ndarray:
        if ep.info.finished:
            return mc_return_to_go(ep.reward, ep.terminal, self.mc_gamma, self.failure_reward)
        # An unfinished episode's last row has a reward too (but no next observation).
        lo, hi = ep.info.start_row, ep.info.stop_row
        return mc_return_to_go(self.read("reward", lo, hi), self.read("terminal", lo, hi),
                               self.mc_gamma, self.failure_reward)[:-1]

    def summary(self) -> dict:
        """What `dojo replay info` prints."""
        closed = [e for e in self.episodes if e.finished]
        by_source = {s: {"episodes": 0, "steps": 0} for s in SOURCES}
        for e in self.episodes:
            by_source[e.source]["episodes"] += 1
            by_source[e.source]["steps"] += e.num_steps
        keys = {f"obs/{k}": {"shape": list(s), "dtype": str(d)} for k, (s, d) in (self.obs_spec or {}).items()}
        if self.action_dim is not None:
            keys["action"] = {"shape": [self.action_dim], "dtype": "float32"}
        return {
            "store": str(self.path),
            "episodes": self.num_episodes,
            "unfinished_episodes": self.num_episodes - len(closed),
            "open_episode": self.open_episode is not None,
            "steps": self.num_steps,
            "rows": self.num_rows,
            "bytes": _store_bytes(self.path),
            "keys": keys,
            "by_source": by_source,
            "success_rate": (sum(e.success for e in closed) / len(closed)) if closed else None,
        }


def open_store(path: str | os.PathLike) -> StoreReader:
    """Open a store for reading; raises StoreError saying what is wrong if it is inconsistent."""
    return StoreReader(path)


def verify_store(path: str | os.PathLike) -> StoreReader:
    """Open and deep-check a store (every chunk decoded); raises StoreError on any problem."""
    reader = StoreReader(path)
    reader.verify()
    return reader


# --------------------------------------------------------------------------------------------
# Writing


class EpisodeWriter:
    """Appends episodes step by step, committing at least every `commit_interval_s`.

    Use from a gymnasium loop:

        writer.begin_episode(task="pick", source="online")
        obs, info = env.reset()
        while True:
            next_obs, reward, terminated, truncated, info = env.step(action)
            writer.add_step(obs, action, reward, terminated, truncated, info=info)
            obs = next_obs
            if terminated or truncated:
                break
        writer.end_episode(obs, success=info["success"])

    Only one writer may hold a store (an flock on its directory). Opening a store a crashed
    writer left behind closes its open episode as unfinished, or with `resume_open_episode`
    takes it up again so that add_step continues it; nothing committed is dropped.
    `mc_gamma` and `failure_reward` (Cal-QL's rule, None to disable) are fixed when the store
    is created; an existing store keeps its own. `durable=False` skips fsync (still safe
    against a killed process, not against a power cut).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        obs_spec: Mapping[str, Any] | None = None,
        action_dim: int | None = None,
        commit_interval_s: float = 1.0,
        mc_gamma: float = 0.99,
        failure_reward: float | None = 0.0,
        durable: bool = True,
        clock: Callable[[], float] = time.monotonic,
        resume_open_episode: bool = False,
    ) -> None:
        if not commit_interval_s >= 0:
            raise ValueError(f"commit_interval_s must be >= 0, got {commit_interval_s}")
        if not 0.0 <= mc_gamma < 1.0:
            raise ValueError(f"mc_gamma must be in [0, 1), got {mc_gamma}")
        self.path = Path(path)
        self.commit_interval_s = commit_interval_s
        self._clock = clock
        self._lock_fd: int | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="replay-writer")
        self._spec = _normalise_spec(obs_spec) if obs_spec is not None else None
        self._action_dim = action_dim
        self._resume_open_episode = resume_open_episode
        self._open: dict | None = None  # metadata of the episode being recorded
        self._buf: dict[str, list] = {}
        self._buf_since_s: float | None = None  # when the oldest uncommitted row was added
        self._ep_reward: list[float] = []
        self._ep_terminal: list[bool] = []
        self._ended = False  # the open episode saw terminal/truncated: only end_episode may follow
        self._closed_pending: list[tuple[dict, np.ndarray]] = []  # (meta, mc_return over its rows)
        store_type = _DurableLocalStore if durable else LocalStore
        # Arrays opened under this setting write all-zero chunks too (zarr skips them by
        # default), so a missing chunk file always means damage, never "all zeros".
        with zarr.config.set({"array.write_empty_chunks": True}):
            if not (self.path / "zarr.json").exists():
                self._create(store_type, mc_gamma, failure_reward)
            self._lock_fd = os.open(self.path, os.O_RDONLY)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise StoreError(f"{self.path} is already open by another writer") from None
            try:
                self._store = store_type(self.path)
                self._open_existing()
            except BaseException:
                self._release_lock()
                raise

    # -- set-up ------------------------------------------------------------------------------
    def _create(self, store_type: type[LocalStore], mc_gamma: float, failure_reward: float | None) -> None:
        """Build an empty store beside `path` and rename it into place: a crash during creation
        leaves no half-made store, only a hidden `.NAME.creating-*` directory."""
        if self.path.exists() and next(self.path.iterdir(), None) is not None:
            raise StoreError(f"{self.path} is not empty and has no zarr.json: not a replay store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.creating-{uuid.uuid4().hex}")
        self._store = store_type(tmp)
        self._group = zarr.open_group(store=self._store, mode="w-")
        self._fmt = {
            "format_version": FORMAT_VERSION,
            "mc_gamma": mc_gamma,
            "failure_reward": failure_reward,
            "sources": list(SOURCES),
            "created_time_s": time.time(),
            "obs_spec": None,
            "action_dim": None,
        }
        for k, dt in META_DTYPES.items():
            self._group.create_array(f"meta/{k}", shape=(0,), dtype=dt, chunks=(1024,),
                                     compressors=BloscCodec(cname="zstd", clevel=3))
        self._data: dict[str, zarr.Array] = {}
        if self._spec is not None and self._action_dim is not None:
            self._create_data_arrays()
        self._rows, self._episodes, self._sequence, self._discards = 0, 0, 0, 0
        self._write_commit(open_episode=None)
        try:
            os.rename(tmp, self.path)  # atomic; also replaces an empty directory
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (self.path / "zarr.json").exists():  # else another writer created it first
                raise
        if store_type is _DurableLocalStore:
            _fsync_dir(self.path.parent)

    def _open_existing(self) -> None:
        for partial in self.path.rglob("*.partial"):  # temp files of writes a crash interrupted
            partial.unlink()
        for creating in (self.path / "meta").glob(".*.creating-*"):  # an interrupted _add_meta_array
            shutil.rmtree(creating)
        reader = StoreReader(self.path)  # consistency check: never append to a broken store
        self._group = zarr.open_group(store=self._store, mode="r+")
        self._fmt = dict(reader.format_attrs)
        self._rows, self._episodes, self._sequence = reader.num_rows, reader.num_episodes, reader.sequence
        self._discards = reader.discards
        stored_spec = reader.obs_spec
        if self._spec is not None and stored_spec is not None and self._spec != stored_spec:
            raise ValueError(f"obs_spec {self._spec} does not match the store's {stored_spec}")
        if self._action_dim is not None and reader.action_dim is not None and self._action_dim != reader.action_dim:
            raise ValueError(f"action_dim {self._action_dim} does not match the store's {reader.action_dim}")
        self._spec = stored_spec or self._spec
        self._action_dim = reader.action_dim or self._action_dim
        for k in META_DEFAULTS:
            if not (self.path / "meta" / k / "zarr.json").is_file():
                self._add_meta_array(k)
        self._meta = {k: self._group[f"meta/{k}"] for k in META_DTYPES}
        self._data = {}
        if stored_spec is None and (self.path / "data").exists():
            shutil.rmtree(self.path / "data")  # arrays a crashed first commit made: not committed
        if stored_spec is not None:
            self._data = {k: self._group[f"data/{k}"] for k in _row_arrays(self._spec, self._action_dim)}
        # Drop rows a crashed writer wrote past its last commit, so they cannot resurface.
        self._trim_to_commit()
        if reader.open_episode is not None:
            self._reopen_episode(reader)
            if not self._resume_open_episode:
                self.close_unfinished()
                self.flush()

    def _add_meta_array(self, key: str) -> None:
        """Give a store written before META_DTYPES[key] existed that array, filled with its default for
        the episodes it holds. Built beside and renamed into place, so a reader sees all of it or none."""
        tmp = self.path / "meta" / f".{key}.creating-{uuid.uuid4().hex}"
        store = type(self._store)(tmp)
        arr = zarr.open_group(store=store, mode="w").create_array(
            key, shape=(self._episodes,), dtype=META_DTYPES[key], chunks=(1024,),
            compressors=BloscCodec(cname="zstd", clevel=3))
        arr[:] = np.full(self._episodes, META_DEFAULTS[key], dtype=META_DTYPES[key])
        if isinstance(store, _DurableLocalStore):
            store.sync_dirs(self._pool)
        os.replace(tmp / key, self.path / "meta" / key)
        shutil.rmtree(tmp)
        if isinstance(self._store, _DurableLocalStore):
            _fsync_dir(self.path / "meta")

    def _reopen_episode(self, reader: StoreReader) -> None:
        """Take up the episode a previous writer left open, with its committed rows."""
        self._open = {k: v for k, v in reader.open_episode.items() if k in META_DTYPES}
        for k, default in META_DEFAULTS.items():
            self._open.setdefault(k, default)
        start = self._open["start_row"]
        self._ep_reward = reader.read("reward", start, self._rows).tolist()
        self._ep_terminal = reader.read("terminal", start, self._rows).tolist()
        self._ended = bool(self._ep_terminal[-1] or reader.read("truncated", self._rows - 1, self._rows)[0])

    def _create_data_arrays(self) -> None:
        self._fmt["obs_spec"] = {k: {"shape": list(s), "dtype": str(d)} for k, (s, d) in self._spec.items()}
        self._fmt["action_dim"] = self._action_dim
        for name, (row_shape, dtype) in _row_arrays(self._spec, self._action_dim).items():
            self._data[name] = self._group.create_array(
                f"data/{name}", shape=(0, *row_shape), dtype=dtype,
                chunks=(_chunk_rows(row_shape, dtype), *row_shape),
                compressors=_compressor(row_shape, dtype), fill_value=0,
            )

    # -- recording ---------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        """Rows written so far, committed or buffered; the next row's index."""
        return self._rows + len(self._buf.get("reward", ()))

    @property
    def committed_rows(self) -> int:
        return self._rows

    @property
    def committed_episodes(self) -> int:
        return self._episodes

    def begin_episode(
        self,
        *,
        source: str = "online",
        task: str = "",
        instruction: str = "",
        operator: str = "",
        robot: str = "",
        calibration_id: str = "",
        start_time_s: float | None = None,
        reset_seed: int = -1,
        reward_source: str = "",
        reset: str = "",
    ) -> None:
        """Open an episode; `reset_seed` is the seed the env was reset with (-1: unknown), which lets
        `dojo replay play` reset the twin to the same initial state. `reward_source` names what produces
        its rewards ("" for the env's own, "<kind>:<model id>" for a reward model). `reset` says how the scene
        got to its start (RESETS: the env's reset, reset-free practice, a person)."""
        self._check_open()
        if self._open is not None:
            raise RuntimeError("begin_episode called while an episode is open: end or discard it first")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if isinstance(reset_seed, bool) or not isinstance(reset_seed, (int, np.integer)) or not (
                -1 <= reset_seed < 2**63):
            raise ValueError(f"reset_seed must be an integer >= 0, or -1 when unknown, got {reset_seed!r}")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        self._open = {
            "start_row": self.num_rows, "source": source, "task": str(task), "instruction": str(instruction),
            "operator": str(operator), "robot": str(robot), "calibration_id": str(calibration_id),
            "start_time_s": time.time() if start_time_s is None else float(start_time_s),
            "reset_seed": int(reset_seed), "reward_source": str(reward_source), "reward_missed": 0,
            "reset": reset,
        }
        self._ep_reward, self._ep_terminal, self._ended = [], [], False

    def add_step(
        self,
        obs: Mapping[str, np.ndarray],
        action: np.ndarray,
        reward: float,
        terminal: bool,
        truncated: bool,
        intervened: bool = False,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Record o_t, a_t, r_t and the end flags of the transition to o_{t+1}.

        `info["intervened"]`, if present, is OR-ed into `intervened` (RobotEnv sets it).
        The action must be the executed one (the operator's when they intervened), in [-1, 1].
        """
        if self._open is None:
            raise RuntimeError("add_step called with no open episode: call begin_episode first")
        if self._ended:
            raise RuntimeError("add_step after a terminal or truncated step: call end_episode(final_obs, success)")
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if self._action_dim is None:
            self._action_dim = action.size
        if action.size != self._action_dim:
            raise ValueError(f"action has {action.size} values, expected {self._action_dim} as in the store")
        if not np.all(np.isfinite(action)) or np.any(np.abs(action) > 1.0 + _ACTION_TOLERANCE):
            raise ValueError(f"action must be finite and in [-1, 1], got {action}")
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward must be finite, got {reward}")
        intervened = bool(intervened) or bool((info or {}).get("intervened", False))
        obs = self._check_obs(obs)
        self._append_row(obs, action, reward, bool(terminal), bool(truncated), intervened, np.nan)
        self._ep_reward.append(reward)
        self._ep_terminal.append(bool(terminal))
        self._ended = bool(terminal) or bool(truncated)
        if self._clock() - self._buf_since_s >= self.commit_interval_s:
            self.flush()

    def end_episode(self, final_obs: Mapping[str, np.ndarray], success: bool, reward_missed: int = 0) -> EpisodeInfo:
        """Append the final observation, close the episode and commit it now. `reward_missed`: how many of
        its labels a reward service did not return in time."""
        if self._open is None:
            raise RuntimeError("end_episode called with no open episode")
        if not self._ep_reward:
            raise ValueError("end_episode on an episode with no steps: add_step at least once, or discard it")
        obs = self._check_obs(final_obs)
        self._append_row(obs, np.zeros(self._action_dim, np.float32), 0.0, False, False, False, 0.0)
        mc = mc_return_to_go(np.array(self._ep_reward), np.array(self._ep_terminal),
                             self._fmt["mc_gamma"], self._fmt["failure_reward"])
        meta = dict(self._open, stop_row=self.num_rows, finished=True, success=bool(success),
                    reward_missed=int(reward_missed))
        self._closed_pending.append((meta, np.append(mc, np.float32(0.0))))
        self._open = None
        self.flush()
        return EpisodeInfo(index=self._episodes - 1, **meta)

    def discard_episode(self) -> None:
        """Drop the open episode, including rows already committed: nothing of it stays on disk."""
        if self._open is None:
            raise RuntimeError("discard_episode called with no open episode")
        start = self._open["start_row"]
        self._open = None
        self._buf, self._buf_since_s = {}, None
        if self._rows > start:
            # First un-count the rows (atomic), then wipe them: a crash in between leaves only
            # uncommitted bytes, which the next writer trims.
            self._rows = start
            self._sequence += 1
            self._discards += 1
            self._write_commit(open_episode=None)
            for arr in self._data.values():
                chunk = arr.chunks[0]
                wipe_stop = min(arr.shape[0], (start // chunk + 1) * chunk)
                if wipe_stop > start:  # the chunk shared with kept rows: overwrite the dropped part
                    arr[start:wipe_stop] = np.zeros((wipe_stop - start, *arr.shape[1:]), arr.dtype)
                arr.resize((start, *arr.shape[1:]))

    def abandon(self) -> None:
        """Release the store without committing what is buffered, as if this process had died; the
        next writer trims the uncommitted rows."""
        self._buf, self._buf_since_s, self._closed_pending = {}, None, []
        self._release_lock()

    def close_unfinished(self) -> None:
        """Close the open episode as unfinished, as after a crash: its last row becomes a final row
        with no transition out of it. For a stream whose episode was cut off (an actor that died).
        Committed with the next flush."""
        if self._open is None:
            raise RuntimeError("close_unfinished called with no open episode")
        if not self._ep_reward:
            raise ValueError("close_unfinished on an episode with no rows: discard it instead")
        mc = mc_return_to_go(np.array(self._ep_reward), np.array(self._ep_terminal),
                             self._fmt["mc_gamma"], self._fmt["failure_reward"])
        mc[-1] = 0.0  # the last row has no next observation, so no transition: padding like a final row
        meta = dict(self._open, stop_row=self.num_rows, finished=False, success=False)
        self._closed_pending.append((meta, mc))
        self._open = None

    @property
    def open_episode(self) -> dict | None:
        """Metadata of the episode being recorded (start_row, source, task, ...), or None."""
        return None if self._open is None else dict(self._open)

    @property
    def action_dim(self) -> int | None:
        return self._action_dim

    def flush(self) -> None:
        """Commit everything buffered (steps of the open episode, closed episodes) now."""
        self._check_open()
        if self._buf or self._closed_pending:
            self._commit_rows(self._buf, open_episode=self._open)
        self._buf, self._buf_since_s = {}, None

    def close(self) -> None:
        """Commit what is buffered and release the store. An open episode stays open (its
        committed rows survive); the next writer closes it as unfinished."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
            self._trim_to_commit()  # a closed store's arrays are exactly as long as what it holds
        finally:
            self._release_lock()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------
    def _trim_to_commit(self) -> None:
        """Cut the arrays to the committed rows and episodes (they grow ahead in _GROW_ROWS steps)."""
        for arr in self._data.values():
            if arr.shape[0] > self._rows:
                arr.resize((self._rows, *arr.shape[1:]))
        for arr in self._meta.values():
            if arr.shape[0] > self._episodes:
                arr.resize((self._episodes,))

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"the writer for {self.path} is closed")

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
        self._pool.shutdown()

    def _check_obs(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(obs, Mapping):
            raise ValueError(f"obs must be a dict of arrays (a gymnasium Dict observation), got {type(obs).__name__}")
        obs = {k: np.asarray(v) for k, v in obs.items()}
        if self._spec is None:
            self._spec = _normalise_spec({k: (v.shape, v.dtype) for k, v in obs.items()})
        if set(obs) != set(self._spec):
            raise ValueError(f"obs has keys {sorted(obs)}, expected {sorted(self._spec)} as in the store")
        out = {}
        for k, (shape, dtype) in self._spec.items():
            v = obs[k]
            if v.shape != shape:
                raise ValueError(f"obs[{k!r}] has shape {v.shape}, expected {shape} as in the store")
            if v.dtype != dtype:
                if not (dtype.kind == "f" and v.dtype.kind in "fiub"):
                    raise ValueError(f"obs[{k!r}] has dtype {v.dtype}, expected {dtype} as in the store")
                v = v.astype(dtype)
            out[k] = v
        return out

    def _append_row(self, obs, action, reward, terminal, truncated, intervened, mc) -> None:
        if not self._buf:
            self._buf = {name: [] for name in ["action", *STEP_DTYPES, *(f"obs/{k}" for k in self._spec)]}
            self._buf_since_s = self._clock()
        for k, v in obs.items():
            self._buf[f"obs/{k}"].append(v)
        self._buf["action"].append(action)
        for name, value in (("reward", reward), ("terminal", terminal), ("truncated", truncated),
                            ("intervened", intervened), ("mc_return", mc)):
            self._buf[name].append(value)

    def _commit_rows(self, buf: dict[str, list], open_episode: dict | None) -> None:
        """Write buffered rows and closed-episode metadata, then replace the commit record."""
        if not self._data and buf:
            with zarr.config.set({"array.write_empty_chunks": True}):
                self._create_data_arrays()
        n0 = self._rows
        n1 = n0 + (len(buf["reward"]) if buf else 0)
        e0 = self._episodes
        e1 = e0 + len(self._closed_pending)
        jobs = []  # (array, first row, values): one per array, written in parallel
        for name, values in buf.items():
            arr = self._data[name]
            block = np.stack(values) if arr.ndim > 1 else np.asarray(values)  # stack: 10x faster on images
            jobs.append((arr, n0, block.astype(arr.dtype, copy=False).reshape(n1 - n0, *arr.shape[1:])))
        for k, arr in self._meta.items():
            if self._closed_pending:
                values = [meta[k] for meta, _ in self._closed_pending]
                jobs.append((arr, e0, np.array(values, dtype=object if META_DTYPES[k] is str else META_DTYPES[k])))
        # Threads overlap the per-file fsyncs (zarr's event loop does the rest); each array's
        # writes stay in order within its own job.
        list(self._pool.map(lambda job: self._write_rows(*job), jobs))
        for meta, mc in self._closed_pending:  # mc_return spans rows committed earlier: after the rows
            self._write_rows(self._data["mc_return"], meta["start_row"], mc, resize=False)
        self._rows, self._episodes = n1, e1
        self._closed_pending = []
        self._sequence += 1
        self._write_commit(open_episode=open_episode if n1 > (open_episode or {}).get("start_row", n1) else None)

    def _write_rows(self, arr: zarr.Array, start: int, values: np.ndarray, resize: bool = True) -> None:
        stop = start + len(values)

        def write() -> None:
            if resize and arr.shape[0] < stop:
                arr.resize((-(-stop // _GROW_ROWS) * _GROW_ROWS, *arr.shape[1:]))
            arr[start:stop] = values

        _wrap(f"{self.path}/{arr.path} rows {start}:{stop}: cannot write", write)

    def _write_commit(self, open_episode: dict | None) -> None:
        if isinstance(self._store, _DurableLocalStore):
            self._store.sync_dirs(self._pool)  # everything the record will count is durable before it is
        record = {
            "rows": self._rows,
            "episodes": self._episodes,
            "open_episode": open_episode,
            "sequence": self._sequence,
            "discards": self._discards,  # tells a racing reader its open-episode rows went away
            "time_s": time.time(),
        }
        self._group = self._group.update_attributes({"dojo_replay": self._fmt, "commit": record})
        if isinstance(self._store, _DurableLocalStore):
            self._store.sync_dirs(self._pool)


# --------------------------------------------------------------------------------------------
# Post-processing


def append_episodes(source: str | os.PathLike, writer: EpisodeWriter) -> int:
    """Copy the finished episodes of the store at `source` to the end of `writer`'s store, with their
    metadata (e.g. to gather a fleet's stores into one). Returns the episodes copied."""
    reader = StoreReader(source)
    fields = ("source", "task", "instruction", "operator", "robot", "calibration_id", "start_time_s", "reset_seed",
              "reward_source", "reset")
    copied = 0
    for i in range(reader.num_episodes):
        ep = reader.episode(i)
        if not ep.info.finished:
            continue
        writer.begin_episode(**{f: getattr(ep.info, f) for f in fields})
        for t in range(ep.info.num_steps):
            writer.add_step({k: v[t] for k, v in ep.obs.items()}, ep.action[t], ep.reward[t], ep.terminal[t],
                            ep.truncated[t], bool(ep.intervened[t]))
        writer.end_episode({k: v[-1] for k, v in ep.obs.items()}, success=ep.info.success,
                           reward_missed=ep.info.reward_missed)
        copied += 1
    return copied


def relabel_rewards(
    path: str | os.PathLike,
    reward_fn: Callable[[Episode], np.ndarray],
    *,
    episodes: range | list[int] | None = None,
    reward_source: str | None = None,
) -> int:
    """Replace the rewards of closed episodes with `reward_fn(episode)` (shape (num_steps,)) and
    recompute their mc_return; with `reward_source`, record it in those episodes' metadata (observations
    are never rewritten). Takes the writer lock. Each chunk is replaced atomically but the
    whole relabelling is not: after a crash, run it again (use a reward_fn that does not read
    the old rewards, so a rerun gives the same result). Returns the number of steps relabelled."""
    writer = EpisodeWriter(path)
    try:
        reader = StoreReader(path)
        indices = range(reader.num_episodes) if episodes is None else episodes
        gamma, failure = reader.mc_gamma, reader.failure_reward
        relabelled = 0
        for i in indices:
            ep = reader.episode(i)
            reward = np.asarray(reward_fn(ep), dtype=np.float32)
            if reward.shape != ep.reward.shape or not np.all(np.isfinite(reward)):
                raise ValueError(
                    f"reward_fn returned shape {reward.shape} for episode {i}, expected finite {ep.reward.shape}"
                )
            lo, hi = ep.info.start_row, ep.info.stop_row
            if ep.info.finished:
                mc = np.append(mc_return_to_go(reward, ep.terminal, gamma, failure), np.float32(0.0))
            else:  # keep the unfinished episode's last reward (it has no next observation)
                full = np.append(reward, reader.read("reward", hi - 1, hi)).astype(np.float32)
                mc = mc_return_to_go(full, reader.read("terminal", lo, hi), gamma, failure)
                mc[-1] = 0.0
            writer._write_rows(writer._data["reward"], lo, reward, resize=False)
            writer._write_rows(writer._data["mc_return"], lo, mc, resize=False)
            if reward_source is not None:
                writer._write_rows(writer._meta["reward_source"], i, np.array([reward_source], dtype=object),
                                   resize=False)
            relabelled += reward.size
        writer._sequence += 1
        writer._write_commit(open_episode=None)
    finally:
        writer.close()
    return relabelled
