"""Preference rewards: the Bradley-Terry loss against hand-computed values, the twin's simulated labeller against
the tasks' own progress, and a fitted ensemble that ranks frames as its labeller does."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dojo.rewards.base import load_reward_model
from dojo.rewards.preference import PreferenceConfig, ask_labeller, bradley_terry_loss, train_preference
from dojo.sim import make_env
from dojo.sim.experts import make_expert
from dojo.sim.labeller import UNSURE, SimLabeller, progress_from_state
from dojo.sim.operators import oracle_progress


def test_bradley_terry_loss_by_hand():
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    # One pair preferring b with r_b - r_a = 1: -log sigmoid(1).
    assert float(bradley_terry_loss(np.array([0.0]), np.array([1.0]), np.array([1]))) == pytest.approx(
        -math.log(sig(1.0)), rel=1e-6)
    # Two pairs: a preferred with r_a - r_b = 2, b preferred with r_b - r_a = -0.5 (the model disagrees).
    got = float(bradley_terry_loss(np.array([2.0, 0.5]), np.array([0.0, 0.0]), np.array([0, 1])))
    assert got == pytest.approx(-(math.log(sig(2.0)) + math.log(sig(-0.5))) / 2, rel=1e-6)
    # A tie (0.5) at equal rewards costs log 2; an ensemble axis broadcasts over the labels.
    assert float(bradley_terry_loss(np.zeros((3, 1)), np.zeros((3, 1)), np.array([0.5]))) == pytest.approx(
        math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("task", ["pick_cube", "reach", "peg_insert"])
def test_sim_labeller_progress_is_the_tasks_own(task):
    env = make_env(task, obs_mode="state", seed=0)
    expert = make_expert(env)
    obs, _ = env.reset(seed=4)
    for _ in range(40):
        assert progress_from_state(task, obs["state"])[0] == pytest.approx(oracle_progress(env), abs=1e-5)
        obs, _, terminated, truncated, _ = env.step(expert())
        if terminated or truncated:
            break
    assert progress_from_state(task, obs["state"])[0] == pytest.approx(oracle_progress(env), abs=1e-5)
    env.close()


def test_sim_labeller_error_rate_and_unsure():
    labeller = SimLabeller("reach", error_rate=0.1, seed=0)
    n = 20_000
    rng = np.random.default_rng(0)
    state = np.zeros((n, 20), np.float32)
    state[:, 17] = rng.uniform(0.0, 0.5, n)  # goal - end-effector distance along x: closer is better
    other = state.copy()
    other[:, 17] = rng.uniform(0.0, 0.5, n)
    truth = labeller.true_answers({"state": state}, {"state": other})
    answers = labeller.compare({"state": state}, {"state": other})
    assert abs(np.mean(answers != truth) - 0.1) < 0.01  # 10 % wrong, as configured
    same = SimLabeller("reach", error_rate=0.5, seed=1).compare({"state": state[:10]}, {"state": state[:10]})
    assert np.all(same == UNSURE)  # identical frames: never a (wrong or right) preference
    with pytest.raises(ValueError, match="expected 20 values"):
        labeller.compare({"state": state[:, :14]}, {"state": state[:, :14]})
    with pytest.raises(ValueError, match="error_rate"):
        SimLabeller("reach", error_rate=1.5)


def test_fitted_ensemble_ranks_frames_like_its_labeller(tmp_path):
    # Reach states along a line to the goal: progress falls with the distance.
    rng = np.random.default_rng(0)
    state = np.zeros((2000, 20), np.float32)
    state[:, 17] = rng.uniform(0.0, 0.4, 2000)
    obs = {"state": state}
    labeller = SimLabeller("reach", error_rate=0.1, seed=0)
    # A tenth of the default budget: a one-dimensional progress is quick to fit, and the suite stays fast.
    config = PreferenceConfig(inputs=("state",), queries=2000, steps=300)
    first, second, answer = ask_labeller(labeller, obs, config.queries, "move the gripper to the red ball")
    model = train_preference(obs, first, second, answer, config, instructions=("move the gripper to the red ball",),
                             progress=False)
    assert model.manifest.metrics["holdout_agreement"] > 0.85  # the labeller itself agrees with the truth on 90 %
    model.save(tmp_path / "pref")
    again = load_reward_model(tmp_path / "pref")
    probe = np.zeros((5, 20), np.float32)
    probe[:, 17] = [0.35, 0.25, 0.15, 0.05, 0.0]
    reward = again.score({"state": probe})
    assert np.all(np.diff(reward) > 0), reward  # nearer the goal, more reward
    assert reward.min() >= 0.0 and reward.max() <= 1.0
    with pytest.raises(ValueError, match="gives a reward, not a success"):
        again.success({"state": probe})
