"""A writer in another process: a tailing reader follows it, and SIGKILL never loses committed data.

Run as a script, this module is the writer child: `python test_replay_crash.py STORE SEED STEPS`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from dojo.replay.sampler import ReplayMirror
from dojo.replay.store import SOURCES, EpisodeWriter, StoreReader, verify_store

SIDE = 16  # small images keep the test quick; the commit path is the same as for 128x128


def row_obs(row: int) -> dict[str, np.ndarray]:
    """Every row's content is a function of its global index, so any row can be checked."""
    return {"state": np.array([row, -row, row % 7], np.float32),
            "cam": np.full((SIDE, SIDE, 3), row % 253, np.uint8)}


def check_rows(reader: StoreReader, start: int, stop: int) -> None:
    if stop <= start:
        return
    got = reader.read_rows(("obs/state", "obs/cam"), start, stop)
    rows = np.arange(start, start + len(got["obs/state"]))
    np.testing.assert_array_equal(got["obs/state"][:, 0], rows)
    np.testing.assert_array_equal(got["obs/cam"][:, 3, 5, 1], rows % 253)


def writer_child(path: str, seed: int, max_steps: int) -> None:
    """Write episodes of random length with tiny commit groups; report progress on stdout."""
    rng = np.random.default_rng(seed)
    print("opening", flush=True)
    writer = EpisodeWriter(path, commit_interval_s=0.01)
    print(f"ready {writer.committed_rows} {writer.committed_episodes}", flush=True)
    steps = 0
    while steps < max_steps:
        length = int(rng.integers(2, 25))
        writer.begin_episode(source=SOURCES[int(rng.integers(0, 4))], task="crash-test")
        for t in range(length):
            row = writer.num_rows
            end = t == length - 1
            writer.add_step(row_obs(row), np.full(2, np.sin(row), np.float32), float(row % 3), end, False)
            steps += 1
            time.sleep(0.002)  # paced like a (fast) robot, so commits also land mid-episode
        if rng.random() < 0.1:
            writer.discard_episode()
            print(f"C {writer.committed_rows} {writer.committed_episodes}", flush=True)
            continue
        info = writer.end_episode(row_obs(writer.num_rows), success=bool(rng.random() < 0.5))
        print(f"E {info.index} {info.start_row} {info.stop_row}", flush=True)
        print(f"C {writer.committed_rows} {writer.committed_episodes}", flush=True)
    writer.close()
    print("done", flush=True)


def spawn(path: Path, seed: int, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, str(path), str(seed), str(steps)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_tailing_reader_follows_a_writer_in_another_process(tmp_path: Path) -> None:
    path = tmp_path / "store"
    EpisodeWriter(path).close()  # create it, so the reader can open it before the writer starts
    reader = StoreReader(path)
    mirror = ReplayMirror.from_store(StoreReader(path))
    child = spawn(path, seed=1, steps=400)
    rows_seen, discards, snapshots, mirrored = 0, 0, set(), 0
    while True:
        alive = child.poll() is None
        reader.refresh()
        assert reader.num_rows >= rows_seen or reader.discards > discards  # only a discard shrinks
        discards = reader.discards
        new_start = min(rows_seen, reader.num_rows)
        check_rows(reader, new_start, reader.num_rows)  # never a half-written or stale row
        rows_seen = reader.num_rows
        snapshots.add(rows_seen)
        mirrored += mirror.tail()
        if not alive:
            break
        time.sleep(0.01)
    assert child.returncode == 0
    reader.refresh()
    final = reader.num_rows
    assert len([s for s in snapshots if 0 < s < final]) >= 3, "the reader never saw the store mid-write"
    assert mirrored == mirror.num_steps == reader.num_steps
    states = mirror.sample(256, np.random.default_rng(0), n_step=3)["obs"]["state"][:, 0]
    assert states.max() < final


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = np.random.default_rng(2024)
    finished: dict[int, tuple[int, int]] = {}  # episode index -> rows, as the writer reported them
    for round_ in range(20):
        child = spawn(path, seed=round_, steps=10**9)
        assert child.stdout.readline().strip() == "opening"
        # From here the child opens (and recovers) the store, then writes: kill it anywhere.
        time.sleep(float(rng.uniform(0.0, 1.0)))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        committed = (0, 0)
        for line in out.splitlines():
            kind, *numbers = line.split()
            if kind == "E":
                finished[int(numbers[0])] = (int(numbers[1]), int(numbers[2]))
            if kind in ("C", "ready"):
                committed = (int(numbers[0]), int(numbers[1]))

        if round_ == 0 and not path.exists():  # killed before it created the store
            assert "ready" not in out
            continue
        reader = StoreReader(path)  # always opens
        reader.verify()  # every chunk decodes, mc_return matches, episodes are well formed
        assert reader.num_rows >= committed[0] and reader.num_episodes >= committed[1]
        check_rows(reader, 0, reader.num_rows)
        for index, (start, stop) in finished.items():
            ep = reader.episodes[index]
            assert (ep.start_row, ep.stop_row, ep.finished) == (start, stop, True), f"round {round_}, episode {index}"
    EpisodeWriter(path).close()  # a last recovery: the dangling episode (if any) becomes unfinished
    reader = verify_store(path)
    assert reader.open_episode is None and reader.num_episodes >= len(finished) > 0
    assert any(not e.finished for e in reader.episodes), "no kill landed mid-episode in 20 rounds"
    g = zarr.open_group(path, mode="r")  # and plain zarr agrees with the commit record
    assert g["data/obs/state"].shape[0] == g.attrs["commit"]["rows"] == reader.num_rows


if __name__ == "__main__":
    writer_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
