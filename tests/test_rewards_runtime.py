"""Reward at run time: `reward.source=classifier|preference` puts a reward model in the env the actor steps, on
the real twin. The model's verdict on the camera frames, not the twin's truth, gives the reward and ends the
episode; the config checks stop a bad reward setting before anything runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from dojo.launch.build import make_env
from dojo.launch.cmd_train import train_config
from dojo.launch.config import ConfigError
from dojo.rewards.classifier import ClassifierConfig, train_classifier
from dojo.rewards.preference import PreferenceConfig, train_preference
from dojo.sim import make_env as make_sim_env
from dojo.sim.experts import make_expert

SIZE = 32


@pytest.fixture(scope="module")
def twin_frames():
    """Front frames and states (with the cube features) of pick_cube scenes, labelled by the twin's truth."""
    env = make_sim_env("pick_cube", obs_mode="both", image_size=(SIZE, SIZE), terminate_on_success=False)
    expert = make_expert(env)
    frames, labels, states = [], [], []
    for seed in range(2):
        obs, info = env.reset(seed=seed)
        for _ in range(40):
            frames.append(obs["front"])
            labels.append(info["success"])
            states.append(obs["state"])
            obs, _, _, _, info = env.step(expert())
    env.close()
    return np.stack(frames), np.array(labels), np.stack(states)


@pytest.fixture(scope="module")
def classifier(twin_frames, tmp_path_factory):
    """A front-camera classifier (any weights: each test below sets the threshold it needs)."""
    frames, labels, _ = twin_frames
    assert labels.any() and not labels.all()
    model = train_classifier({"front": frames}, labels, {"front": frames}, labels,
                             ClassifierConfig(cameras=("front",), steps=2), progress=False)
    return model, tmp_path_factory.mktemp("classifier")


def saved_with_threshold(classifier, threshold: float) -> str:
    model, root = classifier
    folder = root / f"t{threshold}"
    model.manifest = dataclasses.replace(model.manifest, threshold=threshold)
    model.save(folder)
    return str(folder)


def sim_config(*overrides: str):
    return train_config(["task=pick_cube", "env.obs_mode=state", "env.max_episode_steps=30", *overrides])


def run_expert(env, seed: int = 3) -> tuple[list[float], bool, bool, int]:
    """An expert episode on `env`: its rewards, whether it terminated, whether it succeeded, and its length."""
    expert = make_expert(env.unwrapped)
    env.reset(seed=seed)
    rewards = []
    while True:
        _, reward, terminated, truncated, info = env.step(expert())
        rewards.append(reward)
        if terminated or truncated:
            return rewards, terminated, info["success"], len(rewards)


def test_a_classifier_that_never_says_success_keeps_a_solved_episode_going(classifier):
    truth = make_env(sim_config(f"env.max_episode_steps={100}"))
    rewards, terminated, _, steps = run_expert(truth)
    truth.close()
    assert terminated and rewards[-1] == 1.0 and steps < 100  # the twin's truth: solved, ended

    model = saved_with_threshold(classifier, 2.0)  # no probability reaches it
    env = make_env(sim_config("reward.source=classifier", f"reward.model={model}", "env.max_episode_steps=100"))
    assert set(env.observation_space.spaces) == {"state"}  # a state policy; the model reads its own camera
    assert env.unwrapped.task.reward_cameras["front"].shape == (SIZE, SIZE)
    rewards, terminated, success, steps = run_expert(env)
    env.close()
    assert not terminated and not success and steps == 100 and set(rewards) == {0.0}


def test_a_classifier_that_always_says_success_ends_the_episode_at_once(classifier):
    model = saved_with_threshold(classifier, 0.0)
    env = make_env(sim_config("reward.source=classifier", f"reward.model={model}"))
    task = env.unwrapped.task
    assert task.reward_source == f"classifier:{task.reward_model.manifest.id}:v1"
    rewards, terminated, success, steps = run_expert(env)
    env.close()
    assert terminated and success and rewards == [1.0] and steps == 1


def test_evaluation_in_the_twin_is_scored_by_its_truth(classifier):
    """A run that practised with a reward model is evaluated (dojo eval, dojo train's final evaluation,
    learner.eval_every) by the twin's ground truth: the classifier that always says success ends nothing there."""
    from dojo.launch.build import eval_config

    model = saved_with_threshold(classifier, 0.0)
    env = make_env(eval_config(sim_config("reward.source=classifier", f"reward.model={model}")))
    assert env.unwrapped.task.name == "pick_cube" and not hasattr(env.unwrapped.task, "manifest")
    rewards, terminated, success, steps = run_expert(env)
    env.close()
    assert terminated and success and steps > 1 and rewards[:-1] == [0.0] * (steps - 1)


def test_the_reward_is_the_models_verdict_on_the_camera_frame(classifier):
    model_dir = saved_with_threshold(classifier, 0.5)
    env = make_env(sim_config("env.obs_mode=both", f"env.image_size={SIZE}", "reward.source=classifier",
                              f"reward.model={model_dir}"))
    model = env.unwrapped.task.reward_model
    env.reset(seed=0)
    expert = make_expert(env.unwrapped)
    for _ in range(10):
        obs, reward, terminated, _, info = env.step(expert())
        assert reward == float(model.score({"front": obs["front"]})[0] >= 0.5) == float(info["success"])
        if terminated:
            break
    env.close()


def test_a_preference_model_gives_its_reward_and_never_ends_an_episode(twin_frames, tmp_path):
    _, _, states = twin_frames
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, len(states), 64), rng.integers(0, len(states), 64)
    answer = (states[second, 16] > states[first, 16]).astype(np.int8)  # the higher cube is preferred
    model = train_preference({"state": states}, first, second, answer,
                             PreferenceConfig(inputs=("state",), steps=2, batch_size=16), progress=False)
    model.save(tmp_path / "pref")
    env = make_env(sim_config("reward.source=preference", f"reward.model={tmp_path / 'pref'}"))
    rewards, terminated, success, steps = run_expert(env)
    env.close()
    assert not terminated and not success and steps == 30
    assert all(0.0 <= r <= 1.0 for r in rewards) and len(set(rewards)) > 1


@pytest.mark.parametrize("overrides, words", [
    (["reward.source=classifier"], "needs reward.model"),
    (["reward.source=classifier", "reward.model=google/paligemma-3b-pt-224"], "hub id"),
    (["reward.source=classifier", "reward.model=/nonexistent/model"], "does not exist"),
    (["reward.source=human"], "reward.source must be one of"),
    (["reward.model=somewhere"], "reads no model"),
])
def test_bad_reward_settings_name_the_value(overrides, words):
    with pytest.raises(ConfigError, match=words):
        sim_config(*overrides)


def test_a_model_of_the_wrong_kind_is_refused(twin_frames, tmp_path):
    _, _, states = twin_frames
    model = train_preference({"state": states}, np.array([0, 1]), np.array([1, 2]), np.array([1, 0], np.int8),
                             PreferenceConfig(inputs=("state",), steps=1, batch_size=2), progress=False)
    model.save(tmp_path / "pref")
    with pytest.raises(ConfigError, match="is a preference model; reward.source=classifier expects classifier"):
        sim_config("reward.source=classifier", f"reward.model={tmp_path / 'pref'}")
    with pytest.raises(ConfigError, match="needs env.kind=sim or robot"):
        train_config(["env.kind=gym", "env.id=Pendulum-v1", "reward.source=preference",
                      f"reward.model={tmp_path / 'pref'}"])


def test_a_station_takes_the_same_reward_setting(classifier):
    """`dojo actor --robot twin reward.source=classifier ...`: the station's own cameras feed the model, and a
    camera whose frames do not have the model's size is refused by name."""
    model = saved_with_threshold(classifier, 0.0)
    reward = ["reward.source=classifier", f"reward.model={model}"]
    cfg = train_config([*reward, f"robot.cameras.front.resize=[{SIZE},{SIZE}]"], robot="twin")
    env = make_env(cfg)
    task = env.unwrapped.task
    assert task.reward.source == "classifier" and task.reward_cameras["front"] is env.unwrapped.cameras["front"]
    rewards, terminated, success, steps = run_expert(env)
    env.close()
    assert terminated and success and rewards == [1.0] and steps == 1
    with pytest.raises(ValueError, match="camera 'front' gives 128x128 frames; .* expects 32x32"):
        make_env(train_config(reward, robot="twin"))


def test_stored_episodes_name_the_model_that_gave_their_rewards(classifier, tmp_path):
    """`dojo record` and the actor's journal (whose rows the link carries to the learner's store) record the
    model's kind, id and version as each episode's reward_source."""
    from dojo.launch.cmd_record import record
    from dojo.link.journal import StoreJournal
    from dojo.replay.store import EpisodeWriter, StoreReader

    model = saved_with_threshold(classifier, 0.0)
    env = make_env(sim_config("reward.source=classifier", f"reward.model={model}"))
    source = env.unwrapped.task.reward_source
    with EpisodeWriter(tmp_path / "recorded.zarr") as writer:
        record(env.unwrapped, writer, 2, act=make_expert(env.unwrapped), seed=0)
    journal = StoreJournal(tmp_path / "journal.zarr")
    journal.begin_episode(task="pick_cube", reward_source=source)
    obs, _ = env.reset(seed=0)
    next_obs, reward, terminated, truncated, info = env.step(make_expert(env.unwrapped)())
    journal.add_step(obs, info["executed_action"], reward, terminated, truncated)
    journal.end_episode(next_obs, info["success"])
    journal.close()
    env.close()
    from dojo.rewards.base import MANIFEST

    manifest = json.loads((Path(model) / MANIFEST).read_text())  # the folder's own word on id and version
    assert source == f"classifier:{manifest['id']}:v{manifest['version']}"
    assert [e.reward_source for e in StoreReader(tmp_path / "recorded.zarr").episodes] == [source] * 2
    assert [e.reward_source for e in StoreReader(tmp_path / "journal.zarr").episodes] == [source]
