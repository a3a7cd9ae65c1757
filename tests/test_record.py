"""`dojo record`: episodes from the twin land in the store whole; discarded or re-recorded ones leave nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dojo.launch.cli import main
from dojo.launch.cmd_record import record
from dojo.replay.store import EpisodeWriter, open_store, verify_store
from dojo.sim import make_env
from dojo.sim.experts import make_expert
from dojo.sim.operators import ScriptedOperator


def test_record_expert_demos_round_trip(tmp_path, capsys):
    out = tmp_path / "demos.zarr"
    assert main(["record", "--sim", "pick_cube", "--episodes", "3", "--out", str(out), "--seed", "7"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 3 and result["success_rate"] == 1.0
    reader = verify_store(out)
    assert reader.num_episodes == 3
    # Re-running the expert on the same seed reproduces every stored row exactly.
    env = make_env("pick_cube")
    expert = make_expert(env)
    for i, episode in enumerate(reader.read_episodes(0, 3)):
        assert episode.info.source == "demo" and episode.info.success and episode.info.finished
        assert episode.info.task == "pick_cube" and episode.info.instruction == env.task.instruction
        obs, _ = env.reset(seed=7 + i)
        for t in range(episode.info.num_steps):
            np.testing.assert_array_equal(episode.obs["state"][t], obs["state"])
            obs, reward, terminated, _, info = env.step(expert(obs))
            np.testing.assert_array_equal(episode.action[t], info["executed_action"])
            assert episode.reward[t] == reward
        np.testing.assert_array_equal(episode.obs["state"][-1], obs["state"])
        assert terminated and episode.terminal[-1]


def test_discard_and_rerecord_leave_nothing(tmp_path):
    env = make_env("pick_cube", max_episode_steps=60)
    # A scripted person: discards the 1st attempt at step 3, re-records the 2nd at step 4 (same seed
    # again), marks the 3rd a failure at step 5, and lets the 4th run to success.
    operator = ScriptedOperator(env, buttons={(0, 3): "discard", (1, 4): "rerecord", (2, 5): "fail"})
    writer = EpisodeWriter(tmp_path / "store.zarr")
    result = record(env, writer, 2, teleop=operator, seed=100)
    writer.close()
    assert result["episodes"] == 2 and result["dropped"] == 2
    reader = verify_store(tmp_path / "store.zarr")
    failed, succeeded = reader.read_episodes(0, 2)
    assert failed.info.num_steps == 5 and not failed.info.success
    assert succeeded.info.success and succeeded.info.num_steps >= 1
    assert reader.num_rows == (5 + 1) + (succeeded.info.num_steps + 1)  # no rows of the dropped attempts
    # The re-recorded attempt repeated seed 101 (the discarded one used seed 100).
    obs, _ = env.reset(seed=101)
    np.testing.assert_array_equal(failed.obs["state"][0], obs["state"])


def test_sigkill_during_recording_keeps_finished_episodes(tmp_path):
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "dojo.launch.cli", "record", "--sim", "pick_cube", "--episodes", "500",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seen, deadline = 0, time.monotonic() + 120
        while seen < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if (out / "zarr.json").exists():
                seen = open_store(out).num_episodes
        assert seen >= 3, f"recorder made no progress: {proc.stderr.read() if proc.poll() is not None else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    reader = verify_store(out)
    assert reader.num_episodes >= seen
    assert all(e.finished and e.success for e in reader.episodes[:seen])
    # A new recording session appends after what survived.
    assert main(["record", "--sim", "pick_cube", "--episodes", "1", "--out", str(out), "--seed", "900"]) == 0
    assert verify_store(out).num_episodes >= seen + 1


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_a_fleet_of_recorders_gathers_every_episode_into_one_store(tmp_path, capsys, backend):
    """`dojo record --workers 2`: two processes (or Ray tasks) record their shares from their own reset seeds;
    the store gets every episode, each with its metadata and its steps as the worker recorded them."""
    if backend == "ray":
        pytest.importorskip("ray")
    out = tmp_path / "fleet.zarr"
    assert main(["record", "--sim", "reach", "--episodes", "5", "--workers", "2", "--backend", backend,
                 "--seed", "7", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 5 and summary["workers"] == 2
    store = verify_store(out)
    seeds = [ep.reset_seed for ep in store.episodes]
    assert seeds == [7, 8, 9, 1_000_007, 1_000_008]  # worker 0 takes 3 episodes, worker 1 two
    assert all(ep.operator == "scripted-expert" and ep.task == "reach" for ep in store.episodes)
    assert not (tmp_path / "fleet.zarr.workers").exists()
    # Worker 1's second episode, recorded alone from its seed, is the same episode.
    assert main(["record", "--sim", "reach", "--episodes", "1", "--seed", "1000008", "--out",
                 str(tmp_path / "one.zarr")]) == 0
    one, last = open_store(tmp_path / "one.zarr").episode(0), store.episode(4)
    np.testing.assert_array_equal(one.obs["state"], last.obs["state"])
    np.testing.assert_array_equal(one.action, last.action)


def test_a_fleet_refuses_a_teleop_device_and_a_bad_worker_count(tmp_path):
    with pytest.raises(ValueError, match="--workers must be a positive number, got 0"):
        main(["--debug", "record", "--sim", "reach", "--episodes", "2", "--workers", "0", "--out",
              str(tmp_path / "a.zarr")])
    assert main(["record", "--sim", "reach", "--episodes", "2", "--workers", "2", "--teleop", "keyboard", "--out",
                 str(tmp_path / "b.zarr")]) != 0
    assert not (tmp_path / "b.zarr").exists()


def test_ray_work_runs_only_where_its_resource_is_offered(tmp_path):
    """A robot's custom resource pins work to the node offering it; work asking for one that no node offers is
    refused in one line instead of waiting forever."""
    ray = pytest.importorskip("ray")
    from dojo.errors import DojoError
    from dojo.link.fleet import run_commands

    ray.init(num_cpus=2, resources={"robot_a": 1}, include_dashboard=False, log_to_driver=False)
    try:
        command = ["record", "--sim", "reach", "--episodes", "1", "--out"]
        run_commands(tmp_path, [command + [str(tmp_path / "a.zarr")]], ["on-robot-a"], "ray", {"robot_a": 1})
        assert open_store(tmp_path / "a.zarr").num_episodes == 1
        with pytest.raises(DojoError, match="asks for 1 of 'robot_b', but no Ray node offers it .*'robot_a'"):
            run_commands(tmp_path, [command + [str(tmp_path / "b.zarr")]], ["on-robot-b"], "ray", {"robot_b": 1})
        assert not (tmp_path / "b.zarr").exists()
    finally:
        ray.shutdown()
