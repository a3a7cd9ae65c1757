"""Reset-free practice sessions (dojo.robot.practice, `dojo practice`): alternation, human resets, the session
rebuilt from the journal, and a session whose actor and learner are SIGKILLed, on the real twin, stores and link."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest
from omegaconf import OmegaConf

from dojo import runs
from dojo.launch.build import make_env, resume_practice
from dojo.launch.cmd_practice import clone_first, replay_attempt
from dojo.launch.config import ConfigError
from dojo.launch.cmd_train import train_config
from dojo.replay.store import EpisodeWriter, StoreReader
from dojo.sim import make_env as make_sim_env
from dojo.sim.experts import make_expert
from dojo.sim.task_pair import OFF_TABLE
from test_actor_learner import child_pid
from test_stream import assert_same_rows, wait_for

CLI = [sys.executable, "-m", "dojo.launch.cli"]
STILL = np.array([0.0, 0.0, 0.0, 1.0], np.float32)  # the arm holds still with open fingers: a failed attempt


def session_env(*overrides):
    cfg = train_config(["task=cube_to_green", "practice.enabled=true", "practice.person_delay_s=0", *overrides])
    return make_env(cfg)


def attempt(env, act, writer=None, seed=0):
    """One attempt; recorded into `writer` as the actor records it. Returns (reset info, success)."""
    obs, info = env.reset(seed=seed)
    robot = env.unwrapped
    if writer is not None:
        writer.begin_episode(source="online", task=robot.task.name, instruction=robot.task.instruction,
                             reset_seed=seed, reset=info["reset"])
    done = False
    while not done:
        action = act(obs)
        next_obs, reward, terminated, truncated, step = env.step(action)
        if writer is not None:
            writer.add_step(obs, step["executed_action"], reward, terminated, truncated, info=step)
        obs, done = next_obs, terminated or truncated
    if writer is not None:
        writer.end_episode(obs, success=step["success"])
    return info, bool(step["success"])


def test_attempts_alternate_on_success_retry_on_failure_and_a_person_resets_after_a_streak():
    env = session_env("practice.max_failures=2")
    expert = make_expert(env.unwrapped)
    session, robot = env.env, env.unwrapped
    plan = ["expert", "expert", "still", "still", "expert", "expert"]
    seen = []
    for k, who in enumerate(plan):
        info, success = attempt(env, (lambda obs: expert()) if who == "expert" else (lambda obs: STILL), seed=k)
        seen.append((info["reset"], info["direction"], robot.task.name, success))
    assert seen == [("", "forward", "cube_to_green", True),        # the process's first attempt: the env's reset
                    ("free", "backward", "cube_to_red", True),     # a success turns round, the scene as it was left
                    ("free", "forward", "cube_to_green", False),
                    ("free", "forward", "cube_to_green", False),   # a failure that left the cube on the red pad:
                                                                   # the same direction again (the other's goal holds)
                    ("human", "forward", "cube_to_green", True),   # max_failures=2 in a row: a person resets the scene
                    ("free", "backward", "cube_to_red", True)]
    assert session.summary() == {"attempts": 6, "human_resets": 1, "forward_successes": 2, "backward_successes": 2}
    assert session.person.resets == 1
    # the direction is part of the state, so one agent learns both
    obs, _ = env.reset(seed=9)
    assert env.observation_space["state"].shape == obs["state"].shape
    np.testing.assert_array_equal(obs["state"][-2:], [1.0, 0.0])  # forward again after the backward success


def test_after_a_failure_that_moved_the_cube_the_other_direction_goes_next():
    """practice.after_failure=turn (the default): a failed attempt that left the cube off both pads is followed by
    the other direction from where the cube lies, and the failure streak goes on across directions; with
    after_failure=retry the same direction is tried again."""
    def fail_off_both_pads(env):
        attempt(env, lambda obs: STILL)
        task, world = env.unwrapped.task, env.unwrapped.arm.world
        world.data.qpos[task._qpos:task._qpos + 3] = [0.45, 0.0, task.cube_pos_m[2]]  # between the pads
        mujoco.mj_forward(world.model, world.data)

    for mode, direction in [("turn", "backward"), ("retry", "forward")]:
        env = session_env(f"practice.after_failure={mode}")
        fail_off_both_pads(env)
        info, success = attempt(env, lambda obs: STILL)
        assert (info["reset"], info["direction"], env.unwrapped.task.name, success) == (
            "free", direction, env.unwrapped.task.direction_names[direction], False)
        assert env.env.failures == 2
        np.testing.assert_allclose(env.unwrapped.task.cube_pos_m[:2], [0.45, 0.0], atol=1e-3)  # the cube stayed
    with pytest.raises(ConfigError, match="practice.after_failure must be one of"):
        session_env("practice.after_failure=sometimes")


def test_a_station_practises_through_the_same_session():
    """`--robot twin` with the pair's task and reset.mode=policy: the station's task switches with the scene,
    the station's person (the twin's) answers, the episodes carry each direction's name and instruction."""
    cfg = train_config(["practice.enabled=true", "robot.task.name=cube_to_green", "robot.task.reset.mode=policy",
                        "robot.task.reset.person_delay_s=0", "practice.max_failures=1"], robot="twin")
    env = make_env(cfg)
    expert, robot = make_expert(env.unwrapped), env.unwrapped
    seen = []
    for k, who in enumerate(["expert", "expert", "still", "expert"]):
        info, success = attempt(env, (lambda obs: expert()) if who == "expert" else (lambda obs: STILL), seed=k)
        seen.append((info["reset"], robot.task.name, robot.task.instruction, success))
    assert seen == [("", "cube_to_green", "put the cube on the green pad", True),
                    ("free", "cube_to_red", "put the cube back on the red pad", True),
                    ("free", "cube_to_green", "put the cube on the green pad", False),
                    ("human", "cube_to_green", "put the cube on the green pad", True)]
    assert robot.person.resets == 1
    with pytest.raises(ConfigError, match="practice.enabled on a station needs robot.task.reset.mode=policy"):
        train_config(["practice.enabled=true", "robot.task.name=cube_to_green"], robot="twin")


def test_a_stuck_scene_gets_a_human_reset_at_once():
    env = session_env()
    attempt(env, lambda obs: STILL)
    task = env.unwrapped.task
    world = env.unwrapped.arm.world
    world.data.qpos[task._qpos:task._qpos + 3] = [0.5, 0.0, -0.2]  # the cube fell off the table
    mujoco.mj_forward(world.model, world.data)
    obs, info = env.reset(seed=1)
    assert (info["reset"], info["why_reset"]) == ("human", OFF_TABLE)
    assert task.stuck_reason() is None and env.env.human_resets == 1
    assert task.cube_pos_m[2] > 0  # the person put the cube back on its start pad


def test_a_restarted_session_takes_up_the_journaled_attempts(tmp_path):
    """A session rebuilt from a journal (as `dojo actor` does after a restart) goes on with the same attempt
    counter, direction, failure streak and human resets; an attempt cut short is attempted again."""
    env = session_env("practice.max_failures=2")
    expert = make_expert(env.unwrapped)
    path = tmp_path / "journal.zarr"
    with EpisodeWriter(path) as writer:
        for k, who in enumerate(["expert", "still", "still", "still"]):
            attempt(env, (lambda obs: expert()) if who == "expert" else (lambda obs: STILL), writer, seed=k)
        # a crash mid-attempt: the episode stays open, and the next writer closes it as unfinished
        obs, info = env.reset(seed=5)
        writer.begin_episode(source="online", task=env.unwrapped.task.name, reset=info["reset"])
        writer.add_step(obs, STILL, 0.0, False, False)
        writer.flush()
        writer.abandon()
    before = env.env.summary() | {"direction": env.env.direction, "failures": env.env.failures}
    EpisodeWriter(path).close()  # the restarted writer closes the open episode as unfinished
    assert [e.finished for e in StoreReader(path).episodes] == [True] * 4 + [False]

    restarted = session_env("practice.max_failures=2")
    resume_practice(restarted, path)
    session = restarted.env
    assert before == {"attempts": 4, "human_resets": 1, "forward_successes": 1, "backward_successes": 0,
                      "direction": "backward", "failures": 1}
    assert session.summary() | {"direction": session.direction, "failures": session.failures} == before
    obs, info = restarted.reset(seed=6)  # this process's first attempt: the twin sets the scene up again
    assert (info["reset"], info["direction"]) == ("", "backward")
    np.testing.assert_array_equal(obs["state"][-2:], [0.0, 1.0])


def test_a_replayed_chain_of_attempts_gives_back_the_stored_states(tmp_path):
    """The session report's videos replay an attempt through the attempts before it since the last full reset;
    the twin gives back exactly the states stored, also after a person's reset."""
    env = session_env("practice.max_failures=1")
    expert = make_expert(env.unwrapped)
    path = tmp_path / "attempts.zarr"
    with EpisodeWriter(path) as writer:
        for k, who in enumerate(["expert", "still", "expert", "expert"]):  # "", free, human, free
            attempt(env, (lambda obs: expert()) if who == "expert" else (lambda obs: STILL), writer, seed=k)
    reader = StoreReader(path)
    assert [e.reset for e in reader.episodes] == ["", "free", "human", "free"]
    twin = make_sim_env("cube_to_green", obs_mode="both", image_size=(24, 24))
    for index in (1, 3):
        stored = reader.episode(index).obs["state"][:, :-2]  # without the session's direction one-hot
        steps = list(replay_attempt(twin, reader, index))
        np.testing.assert_array_equal(np.array([obs["state"] for obs, *_ in steps]), stored[:-1])
        # the drawn attempt's frames (the attempts before it were replayed without reading the cameras)
        assert {obs["front"].shape for obs, *_ in steps} == {(24, 24, 3)} and twin.read_cameras


def test_practice_needs_a_task_pair_and_sane_values(tmp_path):
    cases = [(["practice", "--sim", "pick_cube"], "--sim must name a reset-free task pair, one of ['cube_pads']; "
                                                 "got 'pick_cube'"),
             (["practice", "--sim", "cube_pads", "practice.max_failures=0"],
              "practice.max_failures must be an integer >= 1, got 0"),
             (["train", "--sim", "pick_cube", "practice.enabled=true"],
              "practice.enabled needs a reset-free task pair's task, one of ['cube_to_green', 'cube_to_red']; "
              "got task=pick_cube"),
             (["train", "--sim", "pick_cube", "learner.max_wall_s=-1"], "learner.max_wall_s must be a number >= 0, "
                                                                         "got -1.0"),
             (["practice", "--sim", "cube_pads", "actor.noise_scale=2"],
              "actor.noise_scale must be a number in [0, 1], got 2.0"),
             (["train", "--sim", "pick_cube", "demos.episodes=0", "learner.offline_updates=10"],
              "learner.offline_updates=10 trains on demos, but demos.episodes=0 and no demos.store: give demos, or "
              "learner.offline_updates=0")]
    for args, line in cases:
        out = subprocess.run(CLI + args[:3] + ["--run", str(tmp_path / "r")] + args[3:], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [f"dojo {args[0]}: error: {line}"], out.stderr
        assert not (tmp_path / "r").exists()


def test_a_session_survives_sigkill_of_its_actor_and_learner(tmp_path):
    """`dojo practice` with its learner SIGKILLed in its offline phase, then its actor and its learner mid-session:
    each is started again and resumes; the learner's store holds every journaled step exactly once, the attempts go
    on counting, and the report, video and curve are written."""
    run = tmp_path / "r"
    args = ["practice", "--sim", "cube_pads", "--run", str(run), "learner.env_steps=600", "demos.episodes=2",
            "env.max_episode_steps=40", "agent.sac.hidden_dims=[32,32]", "agent.sac.batch_size=32",
            "learner.start_after_steps=50", "learner.checkpoint_every_s=1.0", "learner.log_every_s=0.5",
            "practice.person_delay_s=0", "practice.videos=1", "agent.sac.bc_only_updates=1000"]
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MUJOCO_GL": "egl"})
    replay = run / "replay" / "actor-0.zarr"
    try:
        # the learner, killed in its offline phase (before it listens), is started again too
        wait_for(lambda: '"env_steps": 0' in ((run / "learner.log").read_text() if (run / "learner.log").exists()
                                               else ""), 300)
        learner = child_pid(proc.pid, "learner")
        offline = runs.read_link_info(run).get("pid") != learner
        os.kill(learner, signal.SIGKILL)
        wait_for(lambda: replay.exists() and StoreReader(replay).num_episodes >= 2, 300)
        os.kill(child_pid(proc.pid, "actor"), signal.SIGKILL)
        wait_for(lambda: "starting it again" in (run / "actor-0.log").read_text(), 60)
        wait_for(lambda: StoreReader(replay).num_episodes >= 6 and (run / runs.CHECKPOINT).exists(), 300)
        os.kill(child_pid(proc.pid, "learner"), signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert (run / "learner.log").read_text().count("killed by signal 9; starting it again") == 2
    assert offline  # the first kill came before the learner listened
    assert_same_rows(run / "journal" / "actor-0.zarr", replay)  # nothing lost, nothing twice
    episodes = StoreReader(replay).episodes
    finished = [e for e in episodes if e.finished]
    assert report["attempts"] == len(finished) >= 6 and report["env_steps"] >= 600
    assert report["forward_attempts"] + report["backward_attempts"] == report["attempts"]
    # the restarted actor set the scene up again (reset "") and went on in the direction that was due
    fresh = [e for e in episodes if e.reset == ""]
    assert len(fresh) >= 2 and {e.task for e in episodes} <= {"cube_to_green", "cube_to_red"}
    assert report["human_resets"] == sum(e.reset == "human" for e in finished)
    assert (run / "practice.png").stat().st_size > 0 and len(report["videos"]) == 1
    assert Path(report["videos"][0]).stat().st_size > 0
    # the demos each started from a scene set up anew (as a person sets it up between demonstrations), not as a
    # chain of the expert's exact placements, and took turns in direction
    demos = StoreReader(run / "demos.zarr").episodes
    assert [(e.reset, e.task) for e in demos] == [("", "cube_to_green"), ("", "cube_to_red")]
    # the session's offline phase: the agent's actor cloned the demos for its bc_only_updates before the first attempt
    rows = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert OmegaConf.load(run / runs.CONFIG).learner.offline_updates == 1000
    assert min(r["updates"] for r in rows if r["env_steps"] > 0) >= 1000


def test_a_session_clones_the_demos_for_the_presets_updates_before_its_first_attempt():
    pair = ["task=cube_to_green", "practice.enabled=true"]
    assert clone_first(train_config([*pair, "agent.name=serl-practice"])) == ["learner.offline_updates=3000"]
    # no demos to clone (a station without teleop demos): no cloning phase, online either
    assert clone_first(train_config([*pair, "agent.name=serl-practice", "demos.episodes=0"])) == [
        "agent.sac.bc_only_updates=0"]
    assert clone_first(train_config([*pair, "agent.name=serl"])) == []  # a preset without one


def test_a_resumed_session_keeps_the_settings_it_started_with(tmp_path):
    """`dojo practice --run RUN` on a finished session (a larger budget) keeps what the session was started with:
    the command's own defaults (acting with the mode, the serl-practice preset) do not override its saved config."""
    run = tmp_path / "r"
    common = ["practice", "--sim", "cube_pads", "--run", str(run), "practice.videos=0"]
    env = {**os.environ, "MUJOCO_GL": "egl"}
    first = subprocess.run(CLI + common + ["learner.env_steps=120", "demos.episodes=2", "env.max_episode_steps=40",
                                           "agent.sac.hidden_dims=[32,32]", "agent.sac.batch_size=32",
                                           "learner.start_after_steps=50", "practice.person_delay_s=0",
                                           "actor.noise_scale=1.0", "agent.name=serl"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(CLI + common + ["learner.env_steps=200"], capture_output=True, text=True, env=env,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    before, after = (json.loads(r.stdout.strip().splitlines()[-1])["attempts"] for r in (first, second))
    assert after > before  # it resumed and practised on
    saved = OmegaConf.load(run / runs.CONFIG)
    assert (saved.actor.noise_scale, saved.agent.name, saved.practice.enabled) == (1.0, "serl", True)


def test_practice_on_a_station_runs_learner_and_actor_and_reports(tmp_path):
    """`dojo practice --robot FILE`: the station's task pair practised by a learner and an actor over loopback (the
    learner's state has the direction too), reported per direction; a station has no expert to record demos."""
    station = ["robot.task.name=cube_to_green", "robot.task.reset.mode=policy", "robot.task.reset.person_delay_s=0",
               "robot.task.max_episode_steps=30"]
    base = CLI + ["practice", "--robot", "twin", "--run", str(tmp_path / "r"), *station]
    out = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "dojo practice: error: --robot has no scripted expert to record demos.episodes=20 demos: give "
        "demos.store=STORE (teleop demos, e.g. dojo record --robot FILE --teleop spacemouse) or demos.episodes=0"]
    out = subprocess.run(base + ["demos.episodes=0", "learner.env_steps=120", "agent.sac.hidden_dims=[32,32]",
                                 "agent.sac.batch_size=32", "learner.start_after_steps=50"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "egl"})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    episodes = [e for e in StoreReader(tmp_path / "r" / "replay" / "actor-0.zarr").episodes if e.finished]
    assert report["robot"] == "twin" and report["attempts"] == len(episodes) >= 3 and report["env_steps"] >= 120
    assert report["forward_attempts"] + report["backward_attempts"] == report["attempts"]
    assert {e.task for e in episodes} <= {"cube_to_green", "cube_to_red"} and episodes[0].reset == ""
    assert [e.reset for e in episodes[1:]] and {e.reset for e in episodes[1:]} <= {"free", "human"}
    assert report["videos"] == [] and (tmp_path / "r" / "practice.png").stat().st_size > 0
