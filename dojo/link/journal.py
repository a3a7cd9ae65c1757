"""Where steps wait for the link: the actor's journal (durable, a local store) and the learner's per-actor
store that the link fills. Store rows travel as link steps.

One link step is one store row, so a step's sequence number is its row index + 1 in both the actor's
journal and the learner's store, and both stores are built from the same steps by the same
`apply_step`: exactly-once delivery means the two hold the same rows. A row that begins an episode
carries its metadata ("meta/<field>"); an episode's last row carries "final" and "success". A begin
row that arrives while an episode is open closes the open one as unfinished (its actor died).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Protocol

import numpy as np

from dojo.link.wire import Step, make_schema
from dojo.replay.store import RESETS, SOURCES, EpisodeWriter, StoreReader
from dojo.threads import join_thread

META_FIELDS = ("source", "task", "instruction", "operator", "robot", "calibration_id", "start_time_s",
               "reset_seed", "reward_source", "reset")
_READ_BLOCK_ROWS = 64


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


def row_step(obs: Mapping[str, np.ndarray], action, reward: float, terminal: bool, truncated: bool,
             intervened: bool, begin: Mapping | None = None, final: bool = False, success: bool = False,
             reward_missed: int = 0) -> dict:
    step = {f"obs/{k}": np.asarray(v) for k, v in obs.items()}
    step.update(action=np.asarray(action, np.float32), reward=float(reward), terminal=bool(terminal),
                truncated=bool(truncated), intervened=bool(intervened), final=bool(final))
    if begin is not None:
        step.update({f"meta/{k}": begin[k] for k in META_FIELDS if begin.get(k) is not None})
    if final:
        step.update(success=bool(success), reward_missed=int(reward_missed))
    return step


def row_schema(obs_spec: Mapping[str, tuple], action_dim: int) -> dict:
    """The link schema of `row_step`s: {"obs/<key>": (shape, dtype), "action": ((action_dim,), float32)} for
    an observation spec {key: (shape, dtype)}."""
    return make_schema({**{f"obs/{k}": v for k, v in obs_spec.items()}, "action": ((int(action_dim),), np.float32)})


def apply_step(writer: EpisodeWriter, step: Mapping) -> None:
    """Append one row-step to a store (not committed: call writer.flush())."""
    obs = {k[4:]: v for k, v in step.items() if k.startswith("obs/")}
    if "meta/source" in step:
        if writer.open_episode is not None:
            writer.close_unfinished()
        writer.begin_episode(**{k: step[f"meta/{k}"] for k in META_FIELDS if f"meta/{k}" in step})
    if step["final"]:
        writer.end_episode(obs, bool(step["success"]), int(step.get("reward_missed", 0)))
    else:
        writer.add_step(obs, step["action"], step["reward"], step["terminal"], step["truncated"], step["intervened"])


class StoreJournal:
    """The actor's journal: steps kept in memory until acknowledged, and written to a local store.

    The control loop records with `begin_episode` / `add_step` / `end_episode` (as with an
    EpisodeWriter) and never waits for the disk: a background thread writes and commits. The link
    thread reads `unacked` (from memory, or from the store after a restart or beyond `memory_steps`)
    and calls `ack`. Only locally committed steps are offered to the link, so the learner never holds
    a step that a crash could take from the journal. A writer-thread failure is raised by the next
    recording call.
    """

    def __init__(self, path: str | os.PathLike, memory_steps: int = 2000, commit_interval_s: float = 0.2,
                 durable: bool = False) -> None:
        # Not fsynced by default: commits stay atomic (safe against a killed actor), and a step reaches the
        # learner, whose store is fsynced, a commit sooner; a power cut on the robot loses at most what the
        # learner has not acknowledged yet. durable=True fsyncs the journal too.
        self.path = path
        self.writer = EpisodeWriter(path, commit_interval_s=commit_interval_s, durable=durable)
        self.memory_steps = memory_steps
        self.commit_interval_s = commit_interval_s
        self._lock = threading.Lock()
        self._memory: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._last_seq = self._committed_seq = self.writer.committed_rows
        self._begin: dict | None = None
        self._action_shape: tuple[int, ...] = (self.writer.action_dim or 0,)
        self._reader: StoreReader | None = None
        self._queue: queue.Queue[dict | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_loop, name="dojo-journal-writer", daemon=True)
        self._thread.start()

    # -- recording (control loop) ---------------------------------------------------------------
    def begin_episode(self, *, source: str = "online", task: str = "", instruction: str = "", operator: str = "",
                      robot: str = "", calibration_id: str = "", start_time_s: float | None = None,
                      reset_seed: int = -1, reward_source: str = "", reset: str = "") -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")
        self._begin = {"source": source, "task": task, "instruction": instruction, "operator": operator,
                       "robot": robot, "calibration_id": calibration_id,
                       "start_time_s": time.time() if start_time_s is None else float(start_time_s),
                       "reset_seed": int(reset_seed), "reward_source": str(reward_source), "reset": str(reset)}

    def add_step(self, obs, action, reward, terminal, truncated, intervened=False, info=None) -> int:
        if self._begin is None and self._last_seq == self._committed_seq == 0:
            raise RuntimeError("add_step called before begin_episode")
        intervened = bool(intervened) or bool((info or {}).get("intervened", False))
        self._action_shape = np.shape(action)
        begin, self._begin = self._begin, None
        return self._push(row_step(obs, action, reward, terminal, truncated, intervened, begin))

    def end_episode(self, final_obs, success: bool, reward_missed: int = 0) -> int:
        padding = np.zeros(self._action_shape, np.float32)
        return self._push(row_step(final_obs, padding, 0.0, False, False, False, final=True, success=success,
                                   reward_missed=reward_missed))

    def _push(self, step: dict) -> int:
        if self._error is not None:
            raise RuntimeError(f"the journal writer for {self.path} failed: {self._error}") from self._error
        with self._lock:
            self._last_seq += 1
            self._memory[self._last_seq] = step
            self._queue.put(step)
            return self._last_seq

    def _write_loop(self) -> None:
        try:
            while True:
                step = self._queue.get()
                if step is None:
                    break
                apply_step(self.writer, step)
                # Commit when the queue runs dry or the interval passed: few commits, short delay.
                if self._queue.empty() or step["final"]:
                    self.writer.flush()
                self._after_commit()
            self.writer.close()
            self._after_commit()
        except BaseException as err:  # surfaced to the control loop by the next _push
            self._error = err

    def _after_commit(self) -> None:
        with self._lock:
            self._committed_seq = self.writer.committed_rows
            # Beyond the memory budget keep only what the store does not hold yet; the rest is re-read.
            while len(self._memory) > self.memory_steps and next(iter(self._memory)) <= self._committed_seq:
                self._memory.popitem(last=False)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every recorded step is committed to the local store."""
        deadline = time.monotonic() + timeout_s
        while self.committed_seq < self.last_seq():
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the journal writer for {self.path} failed: {self._error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"journal {self.path} did not commit within {timeout_s} s")
            time.sleep(0.005)

    @property
    def committed_seq(self) -> int:
        with self._lock:
            return self._committed_seq

    def close(self) -> None:
        """Commit everything recorded, then release the store (an open episode stays open)."""
        if self._thread.is_alive():
            self._queue.put(None)
            join_thread(self._thread, 120.0, f"the journal writer for {self.path}")
        if self._error is not None:
            raise RuntimeError(f"the journal writer for {self.path} failed: {self._error}") from self._error

    # -- the link's Journal protocol (link thread) ------------------------------------------------
    def last_seq(self) -> int:
        with self._lock:
            return self._last_seq

    def ack(self, seq: int) -> None:
        with self._lock:
            while self._memory and next(iter(self._memory)) <= min(seq, self._committed_seq):
                self._memory.popitem(last=False)

    def unacked(self, after_seq: int) -> Iterator[tuple[int, dict]]:
        seq = after_seq + 1
        while True:
            with self._lock:
                step = self._memory.get(seq)
                committed = self._committed_seq
            if seq > committed:
                return
            if step is not None:
                yield seq, step
                seq += 1
            else:
                for step in self._read_rows(seq - 1, min(committed, seq - 1 + _READ_BLOCK_ROWS)):
                    yield seq, step
                    seq += 1

    def _read_rows(self, lo: int, hi: int) -> list[dict]:
        """Committed rows [lo, hi) as steps, with episode boundaries from the store's episode table."""
        if self._reader is None:
            self._reader = StoreReader(self.path)
        reader = self._reader
        reader.refresh()
        begins = {e.start_row: {k: getattr(e, k) for k in META_FIELDS} for e in reader.episodes}
        ends = {e.stop_row - 1: e for e in reader.episodes if e.finished}
        if reader.open_episode is not None:
            begins[reader.open_episode["start_row"]] = reader.open_episode
        block = {k: reader.read(k, lo, hi) for k in ("action", "reward", "terminal", "truncated", "intervened")}
        obs = {k: reader.read(f"obs/{k}", lo, hi) for k in reader.obs_keys}
        return [row_step({k: v[i] for k, v in obs.items()}, block["action"][i], block["reward"][i],
                         block["terminal"][i], block["truncated"][i], block["intervened"][i],
                         begin=begins.get(row), final=row in ends, success=bool(row in ends and ends[row].success),
                         reward_missed=ends[row].reward_missed if row in ends else 0)
                for i, row in enumerate(range(lo, hi))]


class StoreSink:
    """The learner's copy of one actor's journal: `on_steps` appends rows and commits before returning."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self.writer = EpisodeWriter(path, commit_interval_s=3600.0, resume_open_episode=True)

    @property
    def last_seq(self) -> int:
        return self.writer.committed_rows

    def on_steps(self, first_seq: int, steps: list[dict]) -> None:
        if first_seq != self.writer.num_rows + 1:
            raise ValueError(f"{self.path}: steps start at seq {first_seq}, but the store holds {self.writer.num_rows}")
        try:
            for step in steps:
                apply_step(self.writer, step)
            self.writer.flush()
        except BaseException:
            # Drop what was not committed (reopening trims it) so the resend finds the store as acked.
            self.writer.abandon()
            self.writer = EpisodeWriter(self.path, commit_interval_s=3600.0, resume_open_episode=True)
            raise

    def close(self) -> None:
        self.writer.close()
