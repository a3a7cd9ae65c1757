"""The actor/learner system as real processes on loopback: SIGKILL either side, cut the link, run two actors,
refuse actors that do not fit, hold an arm still without a policy, keep a second learner off a live run, and
resume a crashed `dojo train`. Afterwards the learner's store holds every step the actors journaled, exactly
once, and nothing else."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dojo import runs
from dojo.link import create_keys
from dojo.replay.store import open_store
from test_stream import assert_same_rows, wait_for

CLI = [sys.executable, "-m", "dojo.launch.cli"]
# A small, quick agent on the twin's reach task: the point here is delivery and safety, not learning.
FAST = ["task=reach", "agent.sac.hidden_dims=[32,32]", "agent.sac.batch_size=32", "learner.start_after_steps=50",
        "learner.snapshot_every_updates=20", "learner.checkpoint_every_s=1.0", "learner.log_every_s=0.5",
        "learner.env_steps=1000000", "actor.random_steps=100", "actor.max_lead_steps=100",
        "env.max_episode_steps=30", "demos.episodes=0"]
LINK_CUT_S = float(os.environ.get("DOJO_LINK_CUT_S", "30"))


def start_learner(run: Path, port: int, *extra: str, flags=()) -> subprocess.Popen:
    """Start a learner and return once it listens (this process's pid in RUN/link.json)."""
    log = open(run.parent / f"{run.name}-learner.log", "ab")
    proc = subprocess.Popen(CLI + ["learner", "--run", str(run), *flags, f"link.port={port}", *FAST, *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: runs.read_link_info(run).get("pid") == proc.pid or proc.poll() is not None, 120)
    assert proc.poll() is None, (run.parent / f"{run.name}-learner.log").read_text()[-2000:]
    return proc


def start_actor(run: Path, port: int, steps: int, actor: str = "actor-0", *extra: str,
                keys: Path | None = None) -> subprocess.Popen:
    log = open(run.parent / f"{run.name}-{actor}.log", "ab")
    where = ["--keys", str(keys)] if keys else ["--run", str(run)]
    return subprocess.Popen(CLI + ["actor", "--learner", f"127.0.0.1:{port}", *where, "--steps", str(steps),
                                   f"actor.id={actor}", f"actor.journal={run.parent / (actor + '.zarr')}", *FAST,
                                   *extra], stdout=log, stderr=subprocess.STDOUT)


def actor_log(run: Path, actor: str = "actor-0") -> str:
    return (run.parent / f"{run.name}-{actor}.log").read_text()


def stored_rows(path: Path) -> int:
    return open_store(path).num_rows if (path / "zarr.json").exists() else 0


def progress(run: Path) -> dict:
    return (runs.read_progress(run) or [{}])[-1]


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout_s: float = 60) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout_s)


def dojo(*args, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout_s)


def free_port() -> int:
    from dojo.launch.cmd_train import free_port as pick

    return pick("127.0.0.1")


@pytest.fixture
def run(tmp_path):
    return tmp_path / "run"


# --- bad input stops before any process starts ------------------------------------------------------------
TRAIN = ["train", "--sim", "reach", "--run", "{tmp}/r"]


@pytest.mark.parametrize("args, words", [
    ([*TRAIN, "learner.n_step=0"], "learner.n_step must be an integer >= 1, got 0"),
    (["train", "--sim", "reach", "learner.env_steps=5", "--run", "{tmp}/r", "learner.n_step=0"],
     "learner.n_step must be an integer >= 1, got 0"),  # overrides in two groups
    ([*TRAIN, "agent.name=calql", "learner.n_step=3"], "learner.n_step=3: Cal-QL's Monte-Carlo bound holds for"),
    ([*TRAIN, "env.control_hz=0"], "env.control_hz must be a number > 0, got 0.0"),
    ([*TRAIN, "agent.sac.utd_ratio=0"], "sac option utd_ratio must be an integer >= 1, got 0"),
    (["train", "--sim", "nope", "--run", "{tmp}/r"],
     "task must be one of ['cube_to_green', 'cube_to_red', 'peg_insert', 'pick_cube', 'reach', "),
    ([*TRAIN, "env.action_dim=5"], "env.action_dim must be one of [4, 7], got 5"),
    ([*TRAIN, "link.port=99999"], "link.port must be an integer in [1, 65535], got 99999"),
    ([*TRAIN, "agent.sac.bogus=1"], "has no option(s) ['bogus']"),
    ([*TRAIN, "learner.env_steps=lots"], "'learner.env_steps' expects a int"),
    ([*TRAIN, "learnr.env_steps=5"], "unknown config key 'learnr.env_steps'"),
    ([*TRAIN, "agent.name=ppo"], "unknown agent 'ppo'"),
    ([*TRAIN, "agent.iql.expectile=0.9"], "agent.iql options {'expectile': 0.9} are set, but"),
    ([*TRAIN, "intervention.aim_offset_m=[0,0]"], "aim_offset_m must be 3 finite numbers"),
    (["learner", "--run", "{tmp}/r", "learner.updates_per_step=0"], "learner.updates_per_step must be a number > 0"),
    (["actor", "--run", "{tmp}/r", "actor.without_learner=sometimes"], "actor.without_learner must be one of"),
    (["learn", "--sim", "reach", "--steps", "10", "--out", "{tmp}/r", "--demo-ratio", "2"],
     "learner.demo_ratio must be a number in [0, 1], got 2"),
    (["learn", "--env", "NoSuchEnv-v3", "--steps", "10", "--out", "{tmp}/r"], "env.id 'NoSuchEnv-v3' is not a"),
    (["learn", "--sim", "reach", "--steps", "10", "--out", "{tmp}/r", "--demos", "{tmp}/damaged.zarr"],
     "demos.store: "),
    (["learn", "--sim", "reach", "--steps", "10", "--out", "{tmp}/r", "--init", "{tmp}/nothing"],
     "no checkpoint at"),
])
def test_bad_values_stop_with_one_line_before_anything_starts(tmp_path, args, words):
    damaged = tmp_path / "damaged.zarr"
    damaged.mkdir()
    (damaged / "zarr.json").write_text("{not json")
    out = dojo(*[a.replace("{tmp}", str(tmp_path)) for a in args], timeout_s=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()  # nothing was created


def child_pid(parent: int, command: str) -> int:
    """The pid of `parent`'s child process running `dojo COMMAND`."""
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        if command in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3].decode():
            return int(pid)
    raise AssertionError(f"no {command} child of {parent}")


def test_a_child_that_dies_is_reported_with_its_reason(tmp_path):
    train = subprocess.Popen(CLI + ["train", "--sim", "reach", "--run", str(tmp_path / "r"), *FAST],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "r" / "actor-0.log").exists() and "episode 1" in
                 (tmp_path / "r" / "actor-0.log").read_text(), 180)
        os.kill(child_pid(train.pid, "actor"), signal.SIGKILL)
        _, err = train.communicate(timeout=120)
    finally:
        train.kill()
    assert train.returncode == 1
    assert err.strip().splitlines() == [
        f"dojo train: error: the actor actor-0 was killed by SIGKILL; see {tmp_path}/r/actor-0.log"]
    assert not Path(f"/proc/{runs.read_link_info(tmp_path / 'r')['pid']}").exists()  # the learner stopped too


# --- delivery --------------------------------------------------------------------------------------------
def test_learner_sigkill_and_restart(run, tmp_path):
    port = free_port()
    learner = start_learner(run, port)
    actor = start_actor(run, port, steps=600)
    try:
        wait_for(lambda: progress(run).get("updates", 0) > 20 and (run / runs.CHECKPOINT).exists(), 180)
        stop(learner, signal.SIGKILL)
        journaled = stored_rows(tmp_path / "actor-0.zarr")
        wait_for(lambda: stored_rows(tmp_path / "actor-0.zarr") > journaled + 30, 60)  # the twin acts on
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
        assert stored_rows(tmp_path / "actor-0.zarr") > cut_at + 5 * LINK_CUT_S  # the twin acted on at ~10 Hz
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


# --- actors that must not act ----------------------------------------------------------------------------
def test_actors_that_do_not_fit_the_run_are_refused_and_never_act(run, tmp_path):
    """Observations of another task, a wrong learner key, a key the learner does not authorise: each actor
    stops with the cause in one line, its journal empty, and the learner's store holds no row."""
    port = free_port()
    learner = start_learner(run, port)
    wrong_learner = create_keys(tmp_path / "other")  # another learner's key pair ...
    shutil.copy(run / "keys" / "actor-0.key_secret", wrong_learner / "actor-0.key_secret")  # ... this actor's key
    unknown = create_keys(tmp_path / "stranger")  # an actor key the learner never authorised
    shutil.copy(run / "keys" / "learner.key", unknown / "learner.key")
    cases = {"pick_cube": (["task=pick_cube"], None,  # the actor started without the learner's task=
                           "obs/state is (24,) float32 on actor actor-0, the run expects (20,) float32"),
             "wrong-key": ([], wrong_learner, "is not that learner's key"),
             "stranger": ([], unknown, "does not authorise this actor's key (actor-0)")}
    try:
        for name, (extra, keys, words) in cases.items():
            actor = subprocess.run(CLI + ["actor", "--learner", f"127.0.0.1:{port}", "--keys",
                                          str(keys or run / "keys"), f"actor.journal={tmp_path / name}.zarr",
                                          *FAST, *extra], capture_output=True, text=True, timeout=120)
            assert actor.returncode == 1, (name, actor.stderr[-2000:])
            last = actor.stderr.strip().splitlines()[-1]
            assert last.startswith("dojo actor: error: ") and words in last, (name, last)
            assert "Traceback" not in actor.stderr
            assert stored_rows(tmp_path / f"{name}.zarr") == 0  # it never acted
        assert stored_rows(run / "replay" / "actor-0.zarr") == 0
        assert "Traceback" not in (tmp_path / "run-learner.log").read_text()
    finally:
        assert stop(learner) == 0


def test_an_actor_without_a_learner_holds_still_says_so_and_gives_up(tmp_path):
    keys = create_keys(tmp_path / "run")
    started = time.monotonic()
    actor = subprocess.run(CLI + ["actor", "--learner", f"127.0.0.1:{free_port()}", "--keys", str(keys),
                                  f"actor.journal={tmp_path / 'j.zarr'}", *FAST, "actor.give_up_s=4"],
                           capture_output=True, text=True, timeout=120)
    took_s = time.monotonic() - started
    assert actor.returncode == 1
    lines = actor.stderr.strip().splitlines()
    holding = [line for line in lines if "holding the arm still: no policy from the learner" in line]
    assert holding, actor.stderr
    assert lines[-1].startswith("dojo actor: error: gave up after holding the arm still for 4 s")
    assert stored_rows(tmp_path / "j.zarr") == 0 and took_s < 60


def test_a_robot_actor_holds_while_its_learner_is_unreachable(run, tmp_path):
    """actor.without_learner=hold (what env.kind=robot means): the learner freezes mid-run; the actor stops
    stepping within the link's timeout, says so at once, resumes if the learner returns, gives up if not."""
    port = free_port()
    learner = start_learner(run, port)
    actor = start_actor(run, port, 10_000, "actor-0", "env.realtime=true", "actor.without_learner=hold",
                        "actor.give_up_s=8")
    try:
        wait_for(lambda: stored_rows(tmp_path / "actor-0.zarr") > 40, 180)
        learner.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        wait_for(lambda: "the learner at 127.0.0.1" in actor_log(run) and "is unreachable" in actor_log(run), 10)
        said_s = time.monotonic() - frozen_at
        rows = stored_rows(tmp_path / "actor-0.zarr")
        time.sleep(2.0)
        assert stored_rows(tmp_path / "actor-0.zarr") - rows <= 2  # still, apart from a commit in flight
        assert said_s < 5.0
        assert actor.wait(timeout=60) == 1
    finally:
        learner.send_signal(signal.SIGCONT)
        stop(actor, signal.SIGKILL)
        stop(learner)
    assert "gave up after holding the arm still" in actor_log(run).strip().splitlines()[-1]


# --- run hygiene -----------------------------------------------------------------------------------------
def test_a_second_learner_or_train_on_a_live_run_is_refused_before_it_touches_anything(run, tmp_path):
    port = free_port()
    learner = start_learner(run, port)
    try:
        watched = [run / runs.CONFIG, run / runs.LINK, *(run / runs.KEYS).rglob("*.key*")]
        before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched}
        for args in (["learner", "--run", str(run), f"link.port={free_port()}", "task=reach"],
                     ["train", "--sim", "reach", "--run", str(run)],
                     ["learn", "--sim", "reach", "--steps", "10", "--out", str(run)]):
            out = dojo(*args, timeout_s=120)
            assert out.returncode == 2 and f"run {run} is live: process {learner.pid} holds" in out.stderr, out.stderr
        assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in watched} == before
    finally:
        assert stop(learner) == 0


def test_the_port_is_checked_and_the_bound_one_is_logged(run, tmp_path):
    port = free_port()
    learner = start_learner(run, port)
    assert stop(learner) == 0
    log = (tmp_path / "run-learner.log").read_text()
    assert re.findall(r"listening on 127\.0\.0\.1:(\d+)", log) == [str(port)]
    assert runs.read_link_info(run)["port"] == port


def test_a_crashed_train_resumes_and_ends_near_its_update_budget(tmp_path):
    """SIGKILL the learner of a `dojo train`; `dojo train --run R` again resumes its checkpoint and store, starts
    the actor only once the new learner listens, and ends with updates close to the budget."""
    run = tmp_path / "r"
    budget, start_after = 1200, 50
    args = ["train", "--sim", "reach", "--run", str(run), *FAST[1:], f"learner.env_steps={budget}",
            "actor.random_steps=0", "demos.episodes=3", "eval.episodes=2"]
    train = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: progress(run).get("env_steps", 0) > 400 and (run / runs.CHECKPOINT).exists(), 240)
        os.kill(runs.read_link_info(run)["pid"], signal.SIGKILL)
        _, err = train.communicate(timeout=120)
    finally:
        train.kill()
    assert train.returncode == 1 and "the learner was killed by SIGKILL" in err
    stored_before = stored_rows(run / "replay" / "actor-0.zarr")
    out = dojo(*args, timeout_s=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    learner_log = (run / "learner.log").read_text()
    resumed = re.findall(r"resumed from .* at (\d+) updates", learner_log)
    assert resumed and int(resumed[-1]) > 0
    # The new actor connected to the new learner: its log starts after the learner listened again.
    assert result["env_steps"] >= budget and stored_rows(run / "replay" / "actor-0.zarr") > stored_before
    assert result["env_steps"] <= budget + 150  # no unpaced run-away steps
    assert result["updates"] >= 0.95 * (result["env_steps"] - start_after), result


def test_an_actor_on_a_station_runs_through_the_factory_and_stops_on_a_frozen_camera(run, tmp_path):
    """`dojo learner --robot twin` and `dojo actor --robot twin`: the same station file on both sides, the
    actor's devices built by the factory. Its front camera freezes 2 s into the first episode: the actor stops
    with the camera's name in one line, having streamed what it did before."""
    small = ["robot.task.obs_mode=pixels", "robot.cameras.front.width=32", "robot.cameras.front.height=32",
             "robot.cameras.wrist.width=32", "robot.cameras.wrist.height=32", "learner.start_after_steps=100000"]
    port = free_port()
    learner = start_learner(run, port, *small, flags=("--robot", "twin"))
    try:
        actor = subprocess.run(CLI + ["actor", "--learner", f"127.0.0.1:{port}", "--run", str(run), "--robot",
                                      "twin", f"actor.journal={tmp_path / 'j.zarr'}", *FAST, *small,
                                      "robot.cameras.front.options.freeze_after_s=2.0", "actor.random_steps=1000"],
                               capture_output=True, text=True, timeout=180)
        assert actor.returncode == 1
        last = actor.stderr.strip().splitlines()[-1]
        assert last.startswith("dojo actor: error: camera 'front' delivered no new frame for 1.0"), last
        journal = tmp_path / "j.zarr"
        assert stored_rows(journal) >= 5  # about 2 s at 10 Hz, less on a busy machine
        wait_for(lambda: stored_rows(run / "replay" / "actor-0.zarr") == stored_rows(journal), 30)
        assert_same_rows(journal, run / "replay" / "actor-0.zarr")
    finally:
        assert stop(learner) == 0
    store = open_store(run / "replay" / "actor-0.zarr")
    assert store.obs_spec["front"][0] == (32, 32, 3) and store.open_episode is not None
    assert store.open_episode["robot"] == "twin"


def test_a_ray_fleet_feeds_one_learner_exactly_once_through_kills(tmp_path):
    """`dojo train` with two Ray actors on a local Ray: one actor's process is SIGKILLed and the other's Ray
    worker too; each comes back and resumes from its journal; every step reaches the learner exactly once."""
    pytest.importorskip("ray")
    run = tmp_path / "r"
    train = subprocess.Popen(CLI + ["train", "--sim", "reach", "--run", str(run), *FAST[1:], "learner.env_steps=900",
                                    "demos.episodes=2", "eval.episodes=0", "actors.count=2", "actors.backend=ray"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def actor_process(actor: str) -> int | None:
        """This run's actor process (a Ray worker's child, not this test's): its command names this run's folder,
        so another dojo run on the machine (a user's session beside the tests) is never touched."""
        for proc in Path("/proc").iterdir():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (proc.name.isdigit() and b"actor" in cmd and f"actor.id={actor}".encode() in cmd
                    and str(run.resolve()).encode() in cmd):
                return int(proc.name)
        return None
    journals = [run / "journal" / f"actor-{i}.zarr" for i in (0, 1)]
    try:
        wait_for(lambda: all(stored_rows(run / "replay" / f"actor-{i}.zarr") > 60 for i in (0, 1)), 300)
        killed = [actor_process("actor-0"), actor_process("actor-1")]
        os.kill(killed[0], signal.SIGKILL)  # the dojo actor process itself
        os.kill(int(Path(f"/proc/{killed[1]}/stat").read_text().split()[3]), signal.SIGKILL)  # actor-1's Ray worker
        at_kill = [stored_rows(j) for j in journals]
        # Both come back as new processes and go on from their journals while the learner still learns.
        wait_for(lambda: all(actor_process(a) not in (None, k) for a, k in zip(("actor-0", "actor-1"), killed))
                 and all(stored_rows(j) > n for j, n in zip(journals, at_kill)), 300)
        out, err = train.communicate(timeout=600)
    finally:
        train.kill()
    assert train.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["env_steps"] >= 900
    assert "killed by signal 9; starting it again" in (run / "actor-0.log").read_text()
    for journal in journals:  # the learner's store: the journal's steps in order, once each (steps journaled
        # after the learner finished stay in the journal for the run's next session)
        assert_same_rows(journal, run / "replay" / journal.name, prefix=True)
    assert (run / "ray_auth_token").stat().st_mode & 0o777 == 0o600
