"""The Zarr episode store on disk: round trips, commits, discards, bad input and damaged stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from dojo.replay.store import (
    EpisodeWriter,
    StoreError,
    StoreReader,
    mc_return_to_go,
    open_store,
    relabel_rewards,
    verify_store,
)

H, W = 12, 16


def make_obs(row: int) -> dict[str, np.ndarray]:
    """Distinct, checkable content for every row: the row index is written into each key."""
    rng = np.random.default_rng(row)
    return {
        "state": np.array([row, row * 0.5, -row, 1.0], dtype=np.float64),  # stored as float32
        "front": rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
        "wrist": np.full((H, W, 3), row % 251, dtype=np.uint8),
        "depth": np.full((H, W), row * 0.25, dtype=np.float32),
    }


def record(writer: EpisodeWriter, steps: int, *, terminal_end: bool = True, success: bool = True, **meta) -> list:
    writer.begin_episode(**meta)
    rows = []
    for t in range(steps):
        row = writer.num_rows
        rows.append(row)
        last = t == steps - 1
        writer.add_step(make_obs(row), np.full(3, np.sin(row), np.float32), reward=float(row % 5) / 4,
                        terminal=last and terminal_end, truncated=last and not terminal_end,
                        intervened=row % 3 == 0)
    writer.end_episode(make_obs(writer.num_rows), success=success)
    return rows


def test_round_trip_every_field(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with EpisodeWriter(path, mc_gamma=0.9, commit_interval_s=0.0) as w:
        record(w, 4, source="demo", task="pick_cube", instruction="pick up the red cube", operator="ana",
               robot="franka-1", calibration_id="cal-7", start_time_s=1000.0)
        record(w, 3, terminal_end=False, success=False, source="intervention", task="pick_cube", start_time_s=2000.0)
        w.begin_episode(source="online")  # left open: a later writer marks it unfinished
        for _ in range(2):
            w.add_step(make_obs(w.num_rows), np.zeros(3), 1.0, False, False)

    reader = open_store(path)
    assert (reader.num_episodes, reader.num_rows, reader.open_episode["start_row"]) == (2, 11, 9)
    e0, e1 = reader.episode(0), reader.episode(1)
    info = e0.info
    assert (info.start_row, info.stop_row, info.num_steps, info.finished, info.success) == (0, 5, 4, True, True)
    assert (info.source, info.task, info.instruction, info.operator, info.robot, info.calibration_id,
            info.start_time_s) == ("demo", "pick_cube", "pick up the red cube", "ana", "franka-1", "cal-7", 1000.0)
    assert (e1.info.source, e1.info.success, e1.info.start_time_s) == ("intervention", False, 2000.0)
    for ep in (e0, e1):
        rows = range(ep.info.start_row, ep.info.stop_row)
        for key in ("state", "front", "wrist", "depth"):
            expected = np.stack([make_obs(r)[key] for r in rows])
            np.testing.assert_array_equal(ep.obs[key], expected.astype(ep.obs[key].dtype))
        steps = np.array(rows[:-1])
        np.testing.assert_allclose(ep.action, np.repeat(np.sin(steps)[:, None], 3, 1).astype(np.float32))
        np.testing.assert_allclose(ep.reward, (steps % 5) / 4)
        np.testing.assert_array_equal(ep.intervened, steps % 3 == 0)
        np.testing.assert_allclose(ep.mc_return, mc_return_to_go(ep.reward, ep.terminal, 0.9), rtol=1e-6)
    assert e0.obs["state"].dtype == np.float32 and e0.obs["depth"].dtype == np.float32
    np.testing.assert_array_equal(e0.terminal, [False, False, False, True])
    np.testing.assert_array_equal(e1.truncated, [False, False, True])
    assert not e1.terminal.any()

    # A new writer closes the open episode as unfinished; its committed rows are all kept.
    EpisodeWriter(path).close()
    reader = verify_store(path)
    last = reader.episodes[-1]
    assert (last.start_row, last.stop_row, last.finished, last.success, last.source) == (9, 11, False, False, "online")
    assert reader.open_episode is None

    # Plain zarr reads the same thing, using the commit record.
    g = zarr.open_group(path, mode="r")
    n = g.attrs["commit"]["rows"]
    np.testing.assert_array_equal(g["data/obs/state"][:n, 0], np.arange(n, dtype=np.float32))
    assert list(g["meta/source"][:]) == ["demo", "intervention", "online"]


def test_commits_follow_the_interval_and_episode_ends(tmp_path: Path) -> None:
    now = [0.0]
    w = EpisodeWriter(tmp_path / "s", commit_interval_s=1.0, clock=lambda: now[0])
    w.begin_episode()
    for t_s in (0.0, 0.3, 0.6):
        now[0] = t_s
        w.add_step(make_obs(w.num_rows), np.zeros(3), 0.0, False, False)
    reader = open_store(tmp_path / "s")
    assert reader.num_rows == 0  # buffered, not yet committed: a reader sees nothing
    now[0] = 1.0  # the oldest buffered step is now 1 s old: this step commits the group
    w.add_step(make_obs(w.num_rows), np.zeros(3), 0.0, False, False)
    assert reader.refresh() == 4 and reader.open_episode == {**reader.open_episode, "start_row": 0}
    now[0] = 1.2
    w.add_step(make_obs(w.num_rows), np.zeros(3), 1.0, True, False)
    assert reader.refresh() == 0
    w.end_episode(make_obs(w.num_rows), success=True)  # an episode end commits at once
    assert reader.refresh() == 2 and reader.num_episodes == 1 and reader.open_episode is None
    w.close()


def test_arrays_grow_ahead_while_writing_and_are_exact_once_closed(tmp_path: Path) -> None:
    """A commit does not resize (and rewrite the metadata of) every array: they grow in blocks and readers
    go by the commit record; closing cuts them to what the store holds, for plain-zarr users."""
    w = EpisodeWriter(tmp_path / "s")
    record(w, 5)
    w.flush()
    group = zarr.open_group(tmp_path / "s", mode="r")
    assert group.attrs["commit"]["rows"] == 6 and group.attrs["commit"]["episodes"] == 1
    assert group["data/action"].shape[0] > 6 and group["meta/start_row"].shape[0] > 1  # grown ahead
    reader = open_store(tmp_path / "s")
    assert reader.num_rows == 6 and len(reader.read("action", 0, 6)) == 6
    record(w, 3)
    w.close()
    group = zarr.open_group(tmp_path / "s", mode="r")
    assert {group[f"data/{k}"].shape[0] for k in ("action", "reward", "obs/front", "mc_return")} == {10}
    assert group["meta/start_row"].shape[0] == 2
    assert verify_store(tmp_path / "s").num_rows == 10  # every chunk decodes
    again = EpisodeWriter(tmp_path / "s")  # reopening and appending after the cut works
    record(again, 2)
    again.close()
    assert open_store(tmp_path / "s").num_rows == 13


def test_discarded_episode_leaves_nothing_behind(tmp_path: Path) -> None:
    """Record A, B (discarded after some of it was committed), C; compare with a store of A, C."""

    def build(path: Path, with_discard: bool) -> None:
        with EpisodeWriter(path, commit_interval_s=0.0) as w:
            record(w, 5, start_time_s=1.0)
            if with_discard:
                w.begin_episode(source="demo", start_time_s=9.0)
                for _ in range(7):
                    w.add_step(make_obs(w.num_rows + 100), np.ones(3), 5.0, False, False)
                assert w.committed_rows == 13  # B's rows were committed...
                w.discard_episode()  # ...and are gone again
            record(w, 4, start_time_s=2.0)

    build(tmp_path / "a", with_discard=True)
    build(tmp_path / "b", with_discard=False)
    files_a = {p.relative_to(tmp_path / "a"): p for p in (tmp_path / "a").rglob("*") if p.is_file()}
    files_b = {p.relative_to(tmp_path / "b"): p for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert sorted(files_a) == sorted(files_b)
    for rel, p in files_a.items():
        if rel != Path("zarr.json"):  # the root document holds commit times and sequence numbers
            assert p.read_bytes() == files_b[rel].read_bytes(), rel
    reader = verify_store(tmp_path / "a")
    assert [e.num_steps for e in reader.episodes] == [5, 4]


def test_writer_rejects_bad_input_with_clear_messages(tmp_path: Path) -> None:
    w = EpisodeWriter(tmp_path / "s")
    with pytest.raises(RuntimeError, match="begin_episode"):
        w.add_step(make_obs(0), np.zeros(3), 0.0, False, False)
    with pytest.raises(ValueError, match="source must be one of"):
        w.begin_episode(source="youtube")
    w.begin_episode()
    w.add_step(make_obs(0), np.zeros(3), 0.0, False, False)
    bad_shape = {**make_obs(1), "front": np.zeros((H, W + 1, 3), np.uint8)}
    with pytest.raises(ValueError, match=r"obs\['front'\] has shape \(12, 17, 3\), expected \(12, 16, 3\)"):
        w.add_step(bad_shape, np.zeros(3), 0.0, False, False)
    with pytest.raises(ValueError, match=r"obs has keys .*expected"):
        w.add_step({"state": np.zeros(4)}, np.zeros(3), 0.0, False, False)
    with pytest.raises(ValueError, match=r"obs\['front'\] has dtype float32, expected uint8"):
        w.add_step({**make_obs(1), "front": np.zeros((H, W, 3), np.float32)}, np.zeros(3), 0.0, False, False)
    with pytest.raises(ValueError, match=r"action must be finite and in \[-1, 1\]"):
        w.add_step(make_obs(1), np.array([0.0, 1.5, 0.0]), 0.0, False, False)
    with pytest.raises(ValueError, match="action has 2 values, expected 3"):
        w.add_step(make_obs(1), np.zeros(2), 0.0, False, False)
    with pytest.raises(ValueError, match="reward must be finite, got nan"):
        w.add_step(make_obs(1), np.zeros(3), float("nan"), False, False)
    with pytest.raises(StoreError, match="already open by another writer"):
        EpisodeWriter(tmp_path / "s")
    w.add_step(make_obs(1), np.zeros(3), 1.0, True, False)
    with pytest.raises(RuntimeError, match="after a terminal"):
        w.add_step(make_obs(2), np.zeros(3), 0.0, False, False)
    w.end_episode(make_obs(2), success=True)
    w.close()
    assert verify_store(tmp_path / "s").num_steps == 2  # the rejected steps left no trace


def test_mc_return_to_go_and_cal_ql_failure_rule() -> None:
    np.testing.assert_allclose(mc_return_to_go([0, 0, 1], [0, 0, 1], 0.9), [0.81, 0.9, 1.0], rtol=1e-6)
    # A terminal cuts the sum: nothing after it flows back.
    np.testing.assert_allclose(mc_return_to_go([1, 1, 1], [0, 1, 0], 0.5), [1.5, 1.0, 1.0])
    # Cal-QL: an all-failure sparse episode is worth failure_reward / (1 - gamma) everywhere.
    np.testing.assert_allclose(mc_return_to_go([-1, -1, -1], [0, 0, 0], 0.9, failure_reward=-1.0), [-10.0] * 3)
    # One success reward breaks the rule; without failure_reward it never applies.
    np.testing.assert_allclose(mc_return_to_go([-1, 0], [0, 1], 0.9, failure_reward=-1.0), [-1.0, 0.0])
    np.testing.assert_allclose(mc_return_to_go([-1, -1], [0, 0], 0.9), [-1.9, -1.0])
    with pytest.raises(ValueError, match="gamma must be in"):
        mc_return_to_go([1.0], [0], 1.0)


def test_failure_rule_applies_in_the_store_and_relabelling_recomputes(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with EpisodeWriter(path, mc_gamma=0.5, failure_reward=-1.0) as w:
        w.begin_episode()
        for t in range(3):
            w.add_step(make_obs(t), np.zeros(3), -1.0, False, t == 2)
        w.end_episode(make_obs(3), success=False)
    np.testing.assert_allclose(open_store(path).episode(0).mc_return, [-2.0] * 3)
    # e.g. a success classifier says the last step was a success after all.
    assert relabel_rewards(path, lambda ep: np.array([-1.0, -1.0, 0.0])) == 3
    ep = verify_store(path).episode(0)
    np.testing.assert_allclose(ep.reward, [-1, -1, 0])
    np.testing.assert_allclose(ep.mc_return, [-1.5, -1.0, 0.0])
    with pytest.raises(ValueError, match=r"reward_fn returned shape \(2,\)"):
        relabel_rewards(path, lambda ep: np.zeros(2))


# ------------------------------------------------------------------------------------------
# Damaged stores: each gives a StoreError naming the problem, never a crash deep inside zarr.


@pytest.fixture()
def good_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    with EpisodeWriter(path) as w:
        for steps in (40, 30):
            record(w, steps)
    verify_store(path)
    return path


def test_deleted_chunk_is_named(good_store: Path) -> None:
    chunk = good_store / "data/obs/front/c/0/0/0/0"
    assert chunk.is_file()
    chunk.unlink()
    with pytest.raises(StoreError, match=r"data/obs/front chunk c/0/0/0/0 \(rows 0:\d+\) is missing"):
        open_store(good_store)


def test_truncated_commit_record_is_named(good_store: Path) -> None:
    doc = good_store / "zarr.json"
    doc.write_bytes(doc.read_bytes()[: len(doc.read_bytes()) // 2])
    with pytest.raises(StoreError, match=r"zarr\.json: cannot read the group metadata"):
        open_store(good_store)


def test_garbage_array_metadata_is_named(good_store: Path) -> None:
    (good_store / "data/action/zarr.json").write_bytes(b"\x00garbage{{")
    with pytest.raises(StoreError, match=r"data/action: cannot open the array"):
        open_store(good_store)


def test_mismatched_lengths_are_named(good_store: Path) -> None:
    zarr.open_array(good_store / "data/reward", mode="r+").resize((50,))
    with pytest.raises(StoreError, match=r"data/reward has 50 rows but the commit record says 72 committed rows"):
        open_store(good_store)


def test_bad_commit_record_and_episode_table_are_named(good_store: Path, tmp_path: Path) -> None:
    g = zarr.open_group(good_store, mode="r+")
    commit = dict(g.attrs["commit"])
    g.attrs["commit"] = {**commit, "rows": "many"}
    with pytest.raises(StoreError, match="commit record field 'rows' is 'many'"):
        open_store(good_store)
    g.attrs["commit"] = commit
    zarr.open_array(good_store / "meta/start_row", mode="r+")[1] = 40  # episode 0 ends at 41
    with pytest.raises(StoreError, match="episode 1 starts at row 40, expected 41"):
        open_store(good_store)
    with pytest.raises(StoreError, match="no replay store at .*does not exist"):
        open_store(tmp_path / "nowhere")
    zarr.open_group(tmp_path / "plain", mode="w")
    with pytest.raises(StoreError, match="not a dojo replay store"):
        open_store(tmp_path / "plain")


def test_truncated_chunk_is_found_by_verify_and_reads(good_store: Path) -> None:
    chunk = good_store / "data/obs/wrist/c/0/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    reader = open_store(good_store)  # the cheap checks on open only look for the files
    with pytest.raises(StoreError, match=r"data/obs/wrist rows 0:\d+: cannot read"):
        reader.verify()
    with pytest.raises(StoreError, match=r"data/obs/wrist rows 0:\d+: cannot read"):
        reader.episode(0)
    # Appending rewrites the damaged chunk (it holds the last rows): a clear error, not a zarr crash.
    w = EpisodeWriter(good_store)
    with pytest.raises(StoreError, match=r"data/obs/wrist rows 72:76: cannot write"):
        record(w, 3)
    with pytest.raises(StoreError, match="cannot write"):
        w.close()  # still cannot commit; the lock is released all the same


def test_replay_commands(good_store: Path) -> None:
    run = [sys.executable, "-c", "import sys; from dojo.launch.cli import main; sys.exit(main(sys.argv[1:]))"]
    info = subprocess.run([*run, "replay", "info", str(good_store)], capture_output=True, text=True, check=True)
    summary = json.loads(info.stdout.strip().splitlines()[-1])
    assert (summary["episodes"], summary["steps"], summary["success_rate"]) == (2, 70, 1.0)
    assert summary["by_source"]["online"] == {"episodes": 2, "steps": 70}
    assert summary["keys"]["obs/front"] == {"shape": [H, W, 3], "dtype": "uint8"} and summary["bytes"] > 0
    ok = subprocess.run([*run, "replay", "verify", str(good_store)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (good_store / "data/mc_return/c/0").unlink()
    bad = subprocess.run([*run, "replay", "verify", str(good_store)], capture_output=True, text=True)
    assert bad.returncode != 0 and "data/mc_return chunk c/0" in bad.stderr and "Traceback" not in bad.stderr


def test_reader_tails_open_episode_rows_in_process(tmp_path: Path) -> None:
    w = EpisodeWriter(tmp_path / "s", commit_interval_s=0.0)
    reader = StoreReader(tmp_path / "s")
    assert reader.num_rows == 0 and reader.obs_keys == ()
    w.begin_episode()
    w.add_step(make_obs(0), np.zeros(3), 0.0, False, False)
    assert reader.refresh() == 1 and reader.obs_keys == ("state", "front", "wrist", "depth")
    np.testing.assert_array_equal(reader.read("obs/wrist", 0, 1)[0], make_obs(0)["wrist"])
    assert np.isnan(reader.read("mc_return")[0])  # unknown until the episode closes
    w.discard_episode()
    assert reader.refresh() == -1 and reader.num_rows == 0
    w.close()
