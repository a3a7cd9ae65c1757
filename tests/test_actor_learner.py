"""The actor/learner system as real processes on loopback: SIGKILL either side, cut the link, run two actors;
afterwards the learner's store holds every step the actors journaled, exactly once."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dojo.launch.cli import main
from dojo.replay.store import open_store
from test_stream import assert_same_rows, wait_for

CLI = [sys.executable, "-m", "dojo.launch.cli"]
# A small, quick agent: the point here is delivery, not learning.
FAST = ["agent.sac.hidden_dims=[32,32]", "agent.sac.num_qs=2", "agent.sac.batch_size=32",
        "learner.start_after_steps=50", "learner.snapshot_every_updates=20", "learner.checkpoint_every_s=1.0",
        "learner.log_every_s=0.5", "learner.env_steps=1000000", "actor.random_steps=100", "actor.max_lead_steps=100",
        "env.max_episode_steps=30", "demos.episodes=0"]
LINK_CUT_S = float(os.environ.get("DOJO_LINK_CUT_S", "30"))


def start_learner(run: Path, port: int, *extra: str) -> subprocess.Popen:
    """Start a learner and return once it serves (its keys exist and it published a snapshot)."""
    log = open(run.parent / f"{run.name}-learner.log", "ab")
    fresh = not (run / "policy.msgpack").exists()
    proc = subprocess.Popen(CLI + ["learner", "--run", str(run), f"link.port={port}", *FAST, *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    if fresh:
        wait_for(lambda: (run / "policy.msgpack").exists() or proc.poll() is not None, 120)
        assert proc.poll() is None, (run.parent / f"{run.name}-learner.log").read_text()[-2000:]
    return proc


def start_actor(run: Path, port: int, steps: int, actor: str = "actor-0", *extra: str) -> subprocess.Popen:
    log = open(run.parent / f"{run.name}-{actor}.log", "ab")
    return subprocess.Popen(CLI + ["actor", "--learner", f"127.0.0.1:{port}", "--run", str(run), "--steps", str(steps),
                                   f"actor.id={actor}", f"actor.journal={run.parent / (actor + '.zarr')}", *FAST,
                                   *extra], stdout=log, stderr=subprocess.STDOUT)


def stored_rows(path: Path) -> int:
    return open_store(path).num_rows if (path / "zarr.json").exists() else 0


def progress(run: Path) -> dict:
    lines = (run / "progress.jsonl").read_text().splitlines() if (run / "progress.jsonl").exists() else []
    return json.loads(lines[-1]) if lines else {}


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout_s: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout_s)


def free_port() -> int:
    from dojo.launch.cmd_train import free_port as pick

    return pick("127.0.0.1")


@pytest.fixture
def run(tmp_path):
    return tmp_path / "run"


def test_bad_config_stops_before_any_process_starts(tmp_path, capsys):
    for bad, words in (("agent.sac.bogus=1", "agent 'sac' has no option(s) ['bogus']"),
                       ("learner.env_steps=lots", "'learner.env_steps' expects a int"),
                       ("learnr.env_steps=5", "unknown config key 'learnr.env_steps'"),
                       ("env.obs_mode=smell", "env.obs_mode must be state, pixels or both")):
        assert main(["train", "--sim", "reach", "--run", str(tmp_path / "r"), bad]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_child_that_dies_is_reported_with_its_reason(tmp_path):
    # The sim operator's options are checked where it is built, in the actor: its reason must reach the user.
    with pytest.raises(RuntimeError, match=r"the actor exited with code 2: .*aim_offset_m must be 3 finite numbers"):
        main(["train", "--sim", "pick_cube", "--run", str(tmp_path / "r"), *FAST, "intervention.mode=rlif",
              "intervention.operator=sim", "intervention.aim_offset_m=[0,0]"])


def test_learner_sigkill_and_restart(run, tmp_path):
    port = free_port()
    learner = start_learner(run, port)
    actor = start_actor(run, port, steps=600)
    try:
        wait_for(lambda: progress(run).get("updates", 0) > 20 and (run / "checkpoints/learner.ckpt").exists(), 180)
        stop(learner, signal.SIGKILL)
        journaled = stored_rows(tmp_path / "actor-0.zarr")
        wait_for(lambda: stored_rows(tmp_path / "actor-0.zarr") > journaled + 30, 60)  # the actor acts on
        learner = start_learner(run, port)
        assert actor.wait(timeout=240) == 0  # finishes its 600 steps, drains the link
        wait_for(lambda: progress(run).get("env_steps", 0) >= 600, 60)
    finally:
        stop(actor, signal.SIGKILL)
        assert stop(learner) == 0
    assert_same_rows(tmp_path / "actor-0.zarr", run / "replay" / "actor-0.zarr")
    # Training resumed from the checkpoint, not from zero.
    resumed = re.findall(r"resumed from .* at (\d+) updates", (tmp_path / "run-learner.log").read_text())
    assert resumed and int(resumed[0]) > 0 and progress(run)["updates"] >= int(resumed[0])


def test_actor_sigkill_and_restart(run, tmp_path):
    port = free_port()
    learner = start_learner(run, port)
    actor = start_actor(run, port, steps=10_000)
    try:
        wait_for(lambda: stored_rows(run / "replay" / "actor-0.zarr") > 150, 180)
        stop(actor, signal.SIGKILL)
        actor = start_actor(run, port, steps=100)  # the restarted actor's journal still holds the old steps
        assert actor.wait(timeout=240) == 0
        journal = open_store(tmp_path / "actor-0.zarr")
        wait_for(lambda: stored_rows(run / "replay" / "actor-0.zarr") == journal.num_rows, 60)
    finally:
        stop(actor, signal.SIGKILL)
        assert stop(learner) == 0
    assert_same_rows(tmp_path / "actor-0.zarr", run / "replay" / "actor-0.zarr")
    assert [e.finished for e in open_store(run / "replay" / "actor-0.zarr").episodes].count(False) <= 1


def test_link_cut_then_exactly_once(run, tmp_path):
    port = free_port()
    learner = start_learner(run, port)
    actor = start_actor(run, port, 10_000, "actor-0", "env.realtime=true")
    try:
        wait_for(lambda: stored_rows(run / "replay" / "actor-0.zarr") > 20, 180)
        learner.send_signal(signal.SIGSTOP)  # the learner goes silent: no acks, no snapshots
        cut_at = stored_rows(tmp_path / "actor-0.zarr")
        time.sleep(LINK_CUT_S)
        assert stored_rows(tmp_path / "actor-0.zarr") > cut_at + 5 * LINK_CUT_S  # acted on at ~10 Hz meanwhile
        learner.send_signal(signal.SIGCONT)
        assert stop(actor, signal.SIGTERM, timeout_s=120) == 0
        journal_rows = stored_rows(tmp_path / "actor-0.zarr")
        wait_for(lambda: stored_rows(run / "replay" / "actor-0.zarr") == journal_rows, 60)
    finally:
        stop(actor, signal.SIGKILL)
        learner.send_signal(signal.SIGCONT)
        assert stop(learner) == 0
    assert_same_rows(tmp_path / "actor-0.zarr", run / "replay" / "actor-0.zarr")


def test_two_actors_feed_one_learner(run, tmp_path):
    port = free_port()
    learner = start_learner(run, port, "learner.actors=[actor-0,actor-1]")
    actors = [start_actor(run, port, 200, name) for name in ("actor-0", "actor-1")]
    try:
        for actor in actors:
            assert actor.wait(timeout=240) == 0
        wait_for(lambda: progress(run).get("env_steps", 0) >= 400, 60)
    finally:
        for actor in actors:
            stop(actor, signal.SIGKILL)
        assert stop(learner) == 0
    for name in ("actor-0", "actor-1"):
        assert_same_rows(tmp_path / f"{name}.zarr", run / "replay" / f"{name}.zarr")
