"""The scripted experts solve their tasks from privileged state, through the env's normal action space."""

import pytest

from dojo.sim import make_env
from dojo.sim.experts import make_expert


def success_rate(env, n_episodes, seed0=0):
    expert = make_expert(env)
    successes = 0
    for episode in range(n_episodes):
        obs, info = env.reset(seed=seed0 + episode)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, reward, terminated, truncated, info = env.step(expert(obs))
        successes += info["success"]
        assert reward == (1.0 if info["success"] else 0.0)  # sparse reward by default
    return successes / n_episodes


@pytest.mark.parametrize("task", ["reach", "pick_cube", "peg_insert"])
def test_expert_succeeds_in_95_percent_of_50_episodes(task):
    assert success_rate(make_env(task), 50) >= 0.95


@pytest.mark.parametrize("task", ["pick_cube", "peg_insert"])
def test_expert_works_with_7d_actions_in_the_ee_frame(task):
    assert success_rate(make_env(task, action_dim=7, action_frame="ee"), 10, seed0=100) >= 0.9


def test_random_policy_rarely_lifts_the_cube():
    """The success flag is not trivially true: a random policy mostly fails."""
    env = make_env("pick_cube", max_episode_steps=30)
    env.action_space.seed(0)
    wins = 0
    for episode in range(5):
        env.reset(seed=episode)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
        wins += info["success"]
    assert wins <= 1


def test_dense_reward_is_shaped_and_below_success():
    env = make_env("reach", dense_reward=True)
    env.reset(seed=0)
    expert = make_expert(env)
    rewards = []
    for _ in range(30):
        _, reward, terminated, _, info = env.step(expert())
        rewards.append(reward)
        if terminated:
            break
    assert info["success"] and rewards[-1] == 1.0
    assert all(0.0 < r < 1.0 for r in rewards[:-1]) and rewards[-2] > rewards[0]
