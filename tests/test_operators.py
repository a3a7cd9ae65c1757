"""Simulated operators on the real twin: the expert through RobotEnv's teleop override, skill, interventions."""

import numpy as np
import pytest

from dojo.robot.teleop import make_teleop
from dojo.sim import make_env
from dojo.sim.experts import make_expert
from dojo.sim.operators import (InterveningOperator, ScriptedOperator, action_to_command, oracle_progress,
                                run_episodes)


@pytest.fixture(scope="module")
def pick_env():
    env = make_env("pick_cube", seed=0)
    yield env
    env.close()


@pytest.mark.parametrize("action_dim, frame", [(4, "base"), (7, "base"), (7, "ee")])
def test_command_maps_back_to_the_action_exactly(action_dim, frame):
    env = make_env("reach", action_dim=action_dim, action_frame=frame, seed=1)
    env.reset(seed=1)
    env.step(np.full(action_dim, 0.3, np.float32))  # leave home so the ee frame is not trivial
    action = np.random.default_rng(0).uniform(-1, 1, action_dim).astype(np.float32)
    cmd = action_to_command(env, action)
    assert cmd.intervene and cmd.frame == frame
    np.testing.assert_allclose(env.teleop_to_action(cmd), action, atol=1e-6)
    env.close()


def test_scripted_operator_drives_the_env_through_the_teleop_override(pick_env):
    operator = ScriptedOperator(pick_env, seed=0)
    expert = make_expert(pick_env)
    pick_env.teleop = operator
    try:
        pick_env.reset(seed=7)
        for _ in range(pick_env.config.max_episode_steps):
            want = expert()  # the expert's action at the state the step starts from
            _, _, terminated, truncated, info = pick_env.step(np.zeros(4, np.float32))  # the policy idles
            assert info["intervened"]
            np.testing.assert_allclose(info["teleop_action"], want, atol=1e-6)
            if terminated or truncated:
                break
        assert info["success"]
    finally:
        pick_env.teleop = None


def test_operator_skill_sets_its_own_success_rate(pick_env):
    perfect = run_episodes(pick_env, ScriptedOperator(pick_env, seed=0), episodes=4, seed=100)
    assert perfect["success_rate"] == 1.0
    sloppy = run_episodes(pick_env, ScriptedOperator(pick_env, skill=0.75, lapse_steps=5, seed=0),
                          episodes=16, seed=100)
    assert 0.25 <= sloppy["success_rate"] <= 0.75  # the documented ~50% setting
    hopeless = run_episodes(pick_env, ScriptedOperator(pick_env, skill=0.0, seed=0), episodes=2, seed=100)
    assert hopeless["success_rate"] == 0.0
    noisy = ScriptedOperator(pick_env, noise_std=0.2, seed=0)
    pick_env.reset(seed=3)
    assert not np.allclose(noisy.action(), make_expert(pick_env)())


def grasp_height_above_cube(env, operator, seed):
    """End-effector height above the cube's centre (m) on the first step the operator closes the gripper."""
    env.teleop = operator
    try:
        env.reset(seed=seed)
        operator.reset()
        for _ in range(env.config.max_episode_steps):
            height = env.arm.state().ee_pos_m[2] - env.task.cube_pos_m[2]
            _, _, _, _, info = env.step(np.zeros(4, np.float32))
            if info["teleop_action"][-1] < 0:
                return height
        raise AssertionError("the operator never closed the gripper")
    finally:
        env.teleop = None


def test_aim_offset_is_a_bias_the_operator_repeats(pick_env):
    env = pick_env.unwrapped
    high = [grasp_height_above_cube(env, ScriptedOperator(env, aim_offset_m=(0, 0, 0.0165)), seed)
            for seed in (100, 101, 102)]
    exact = [grasp_height_above_cube(env, ScriptedOperator(env), seed) for seed in (100, 101, 102)]
    np.testing.assert_allclose(exact, 0.0, atol=0.009)  # the expert closes at the cube's centre (+ its tolerance)
    np.testing.assert_allclose(np.subtract(high, exact), 0.0165, atol=0.004)  # every time 16.5 mm higher
    sloppy = run_episodes(env, ScriptedOperator(env, aim_offset_m=(0, 0, 0.0165)), episodes=16, seed=100)
    assert 0.25 <= sloppy["success_rate"] <= 0.75  # the documented ~50% setting
    beside = run_episodes(env, ScriptedOperator(env, aim_offset_m=(0.036, 0, 0)), episodes=16, seed=100)
    assert 0.25 <= beside["success_rate"] <= 0.75  # the other one (the RLIF benchmark's operator)
    hopeless = run_episodes(env, ScriptedOperator(env, aim_offset_m=(0, 0, 0.04)), episodes=2, seed=100)
    assert hopeless["success_rate"] == 0.0  # closes above the cube
    with pytest.raises(ValueError, match=r"aim_offset_m must be 3 finite numbers .* got \(0, 0\)"):
        ScriptedOperator(env, aim_offset_m=(0, 0))
    with pytest.raises(ValueError, match="aim_offset_m must be 3 finite numbers .* got 'high'"):
        InterveningOperator(env, aim_offset_m="high")


def flags_under(env, operator, policy, steps, seed=11):
    """info["intervened"] per step with `operator` watching `policy` for up to `steps` steps."""
    env.teleop = operator
    try:
        obs, _ = env.reset(seed=seed)
        operator.reset()
        flags = []
        for _ in range(steps):
            action = policy(obs)
            operator.observe(obs, action)
            obs, _, terminated, truncated, info = env.step(action)
            flags.append(info["intervened"])
            if terminated or truncated:
                break
        return flags, info
    finally:
        env.teleop = None


def idle(obs):
    return np.zeros(4, np.float32)


def test_deviation_rule_takes_over_after_k_bad_steps_then_hands_back(pick_env):
    operator = InterveningOperator(pick_env, rule="deviation", threshold=0.5, patience_steps=3, takeover_steps=4)
    flags, _ = flags_under(pick_env, operator, idle, steps=12)
    F, T = False, True
    assert flags == [F, F, T, T, T, T, F, F, T, T, T, T]
    assert operator.interventions == 2 and operator.intervened_steps == 8

    expert = make_expert(pick_env)
    flags, info = flags_under(pick_env, operator, lambda obs: expert(), steps=100)
    assert not any(flags) and info["success"] and operator.interventions == 0


def test_deviation_rule_needs_observe(pick_env):
    operator = InterveningOperator(pick_env, rule="deviation", patience_steps=1)
    pick_env.reset(seed=0)
    for _ in range(5):
        assert not operator.read().intervene  # no proposed action: nothing to judge


def test_value_rule_with_the_oracle_critic(pick_env):
    operator = InterveningOperator(pick_env, rule="value", patience_steps=3, takeover_steps=5)
    flags, _ = flags_under(pick_env, operator, idle, steps=9)
    assert flags == [False, False, False, True, True, True, True, True, False]  # no progress in 3 steps

    expert = make_expert(pick_env)
    flags, info = flags_under(pick_env, operator, lambda obs: expert(), steps=100)
    assert not any(flags) and info["success"]

    # A critic that always sees progress never calls for help, even for an idle policy.
    ticks = iter(range(10**6))
    patient = InterveningOperator(pick_env, rule="value", critic=lambda env: float(next(ticks)))
    flags, _ = flags_under(pick_env, patient, idle, steps=10)
    assert not any(flags)
    pick_env.reset(seed=0)
    assert 0.0 <= oracle_progress(pick_env) < 1.0


def test_intervening_operator_rescues_a_bad_policy(pick_env):
    rng = np.random.default_rng(0)

    def random_policy(obs):
        return rng.uniform(-1, 1, 4).astype(np.float32)

    watched = run_episodes(pick_env, InterveningOperator(pick_env, seed=0), episodes=4, seed=200,
                           policy=random_policy)
    assert watched["interventions"] >= 4 and watched["intervened_steps"] > 0
    assert watched["success_rate"] >= 0.75


def test_factory_and_bad_config(pick_env):
    assert isinstance(make_teleop("sim-operator", env=pick_env), ScriptedOperator)
    op = make_teleop("sim-operator", env=pick_env, mode="intervening", rule="value", takeover_steps=7)
    assert isinstance(op, InterveningOperator) and op.takeover_steps == 7
    with pytest.raises(ValueError, match="mode must be 'scripted' or 'intervening', got 'lazy'"):
        make_teleop("sim-operator", env=pick_env, mode="lazy")
    with pytest.raises(ValueError, match=r"unknown scripted sim operator option\(s\) \['rule'\]"):
        make_teleop("sim-operator", env=pick_env, rule="value")  # rules belong to the intervening mode
    with pytest.raises(ValueError, match="rule must be one of .* got 'vibes'"):
        InterveningOperator(pick_env, rule="vibes")
    with pytest.raises(ValueError, match=r"skill must be a probability in \[0, 1\], got 1.5"):
        ScriptedOperator(pick_env, skill=1.5)
    with pytest.raises(ValueError, match="takeover_steps must be a positive integer, got 0"):
        InterveningOperator(pick_env, takeover_steps=0)
    with pytest.raises(ValueError, match=r"proposed action must have shape \(4,\), got \(7,\)"):
        op.observe(None, np.zeros(7))
