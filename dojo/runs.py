"""The run folder: one layout for `dojo learn`, `dojo learner` and `dojo train`, and the lock that keeps a
second learner off a live run.

    RUN/config.yaml                the resolved config
    RUN/keys/                      link key pairs (dojo.link.keys)
    RUN/replay/<actor>.zarr        every step each actor produced, exactly once
    RUN/checkpoints/learner.ckpt   full learner state (agent + counters), replaced atomically
    RUN/policy.msgpack             the newest inference snapshot (what `dojo eval --run` reads)
    RUN/progress.jsonl             one JSON line per log interval; RUN/tb/ TensorBoard events
    RUN/link.json                  where the live learner listens: host, port, pid
    RUN/started.json               when the run's learner first started (unix time): learner.max_wall_s counts
                                   from it, across restarts
    RUN/.lock                      held (flock) by the process that owns the run while it is live
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from dojo.fileio import atomic_write

CONFIG = "config.yaml"
KEYS = "keys"
REPLAY = "replay"
CHECKPOINT = "checkpoints/learner.ckpt"
SNAPSHOT = "policy.msgpack"
PROGRESS = "progress.jsonl"
LINK = "link.json"
STARTED = "started.json"
LOCK = ".lock"
# A supervisor that holds the lock passes it to the learner it starts: the lock's file descriptor number.
LOCK_FD_ENV = "DOJO_RUN_LOCK_FD"


class RunBusy(ValueError):
    pass


class RunLock:
    """An exclusive flock on RUN/.lock, held for as long as the process (or the child it passes it to) runs.
    The kernel drops it when they die, so a crashed run is never left locked."""

    def __init__(self, run: str | os.PathLike) -> None:
        self.run = Path(run)
        path = self.run / LOCK
        inherited = os.environ.get(LOCK_FD_ENV)
        if inherited and _same_file(int(inherited), path):
            self.fd = int(inherited)  # our supervisor took it for us
            return
        self.run.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise RunBusy(f"run {self.run} is live: process {holder} holds {path}; stop it first or choose "
                          f"another run folder") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def child_env(self) -> dict:
        """Environment for a child process that takes over this lock (pass `pass_fds=(lock.fd,)` too)."""
        return {**os.environ, LOCK_FD_ENV: str(self.fd)}

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def write_link_info(run: str | os.PathLike, host: str, port: int) -> None:
    """Say where this (live) learner listens; a supervisor waits for it with this process's pid."""
    atomic_write(Path(run) / LINK, json.dumps({"host": host, "port": port, "pid": os.getpid()}).encode())


def read_link_info(run: str | os.PathLike) -> dict:
    path = Path(run) / LINK
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def first_started(run: str | os.PathLike) -> float:
    """The unix time the run first started, written on the first call."""
    path = Path(run) / STARTED
    try:
        return float(json.loads(path.read_text())["unix_s"])
    except (OSError, ValueError, KeyError):
        now = time.time()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"unix_s": now}).encode())
        return now


def read_progress(run: str | os.PathLike) -> list[dict]:
    path = Path(run) / PROGRESS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line torn by a killed learner
            continue
    return rows


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's checkpoint (for `--init RUN`)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (give a checkpoint file or a run folder holding "
                                f"{CHECKPOINT})")
    return path
