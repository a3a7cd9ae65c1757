"""The safety layer, alone and between actions and the twin's arm under random and adversarial actions."""

import numpy as np
import pytest

from dojo.robot import geometry
from dojo.robot.safety import SafetyConfig, SafetyLayer
from dojo.sim import make_env
from dojo.sim.world import WORKSPACE_MAX_M, WORKSPACE_MIN_M

BOX_MIN, BOX_MAX = np.array(WORKSPACE_MIN_M), np.array(WORKSPACE_MAX_M)
IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])


def test_config_rejects_bad_bounds_with_the_values():
    with pytest.raises(ValueError, match=r"min_m must be < max_m.*0\.5"):
        SafetyConfig(workspace_min_m=(0.5, 0, 0), workspace_max_m=(0.4, 1, 1))
    with pytest.raises(ValueError, match="3 finite numbers"):
        SafetyConfig(workspace_min_m=(0, 0, np.nan), workspace_max_m=(1, 1, 1))
    with pytest.raises(ValueError, match="max_step_m"):
        SafetyConfig(workspace_min_m=(0, 0, 0), workspace_max_m=(1, 1, 1), max_step_m=-0.1)
    with pytest.raises(ValueError, match="max_tilt_rad"):
        SafetyConfig(workspace_min_m=(0, 0, 0), workspace_max_m=(1, 1, 1), max_tilt_rad=np.inf)


def test_filter_limits_step_clips_box_and_bounds_rotation():
    layer = SafetyLayer(SafetyConfig(workspace_min_m=(0, 0, 0), workspace_max_m=(1, 1, 1), max_step_m=0.05,
                                     max_step_rad=0.2, max_tilt_rad=0.3))
    layer.reference_quat_wxyz = IDENTITY
    pos, _ = layer.filter(np.array([0.5, 0.5, 0.5]), IDENTITY, np.array([0.5, 0.5, 10.0]), IDENTITY)
    assert np.allclose(pos, [0.5, 0.5, 0.55])  # one step of 5 cm towards the target
    pos, _ = layer.filter(np.array([0.99, 0.5, 0.02]), IDENTITY, np.array([1.2, 0.5, -0.2]), IDENTITY)
    assert np.all(pos <= 1) and np.all(pos >= 0)
    far = geometry.rotvec_to_quat(np.array([0.0, 0.0, 1.0]))
    _, quat = layer.filter(np.full(3, 0.5), IDENTITY, np.full(3, 0.5), far)
    assert np.linalg.norm(geometry.quat_to_rotvec(quat)) == pytest.approx(0.2)  # per-step limit
    tilted = geometry.rotvec_to_quat(np.array([0.0, 0.25, 0.0]))
    _, quat = layer.filter(np.full(3, 0.5), tilted, np.full(3, 0.5), geometry.rotvec_to_quat([0, 0.45, 0]))
    assert np.linalg.norm(geometry.quat_to_rotvec(quat)) == pytest.approx(0.3)  # tilt bound from reference
    with pytest.raises(ValueError, match="target position must be finite"):
        layer.filter(np.full(3, 0.5), IDENTITY, np.array([0.5, np.inf, 0.5]), IDENTITY)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e9, -1e9])
def test_non_finite_or_huge_action_raises_before_anything_is_commanded(bad):
    env = make_env("pick_cube", action_dim=7)
    env.reset(seed=0)
    env.step(np.array([0.5, 0.2, -0.3, 0.1, 0.0, 0.0, 1.0], np.float32))
    arm, data = env.arm, env.arm.world.data
    before = (arm.target_pos_m.copy(), arm.target_quat_wxyz.copy(), data.ctrl.copy(), data.qpos.copy(), data.time)
    action = np.array([0.1, 0.1, 0.1, 0.0, 0.0, 0.0, bad], np.float32)
    with pytest.raises(ValueError, match="action must") as error:
        env.step(action)
    assert ("finite" if not np.isfinite(bad) else "in [-1, 1]") in str(error.value)
    assert np.array2string(np.float32(bad)).replace("+", "") in str(error.value).replace("+", "")  # names it
    after = (arm.target_pos_m, arm.target_quat_wxyz, data.ctrl, data.qpos, data.time)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_slightly_out_of_range_action_is_clipped_to_one_step():
    """Actions up to max_abs_action are clipped into [-1, 1]: 5.0 commands the same target as 1.0."""
    targets = []
    for scale in (1.0, 5.0):
        env = make_env("reach")
        env.reset(seed=0)
        start = env.arm.state().ee_pos_m
        env.step(np.array([scale, -scale, scale, scale], np.float32))
        targets.append(env.arm.target_pos_m - start)
    assert np.array_equal(targets[0], targets[1])
    # a full diagonal step (3 cm per axis) is cut to the safety layer's 5 cm per step
    assert np.linalg.norm(targets[1]) == pytest.approx(env.safety.config.max_step_m)


def _adversarial_actions(rng, n_steps, dim):
    """Episodes of random, saturating (out of range, clipped), bang-bang and corner-pushing actions."""
    kind = rng.integers(5)
    if kind == 0:
        return rng.uniform(-1, 1, (n_steps, dim))
    if kind == 1:
        return rng.choice([-9.0, 9.0], (n_steps, dim))
    if kind == 2:  # flip direction every 3 steps: excites overshoot
        signs = np.sign(rng.standard_normal(dim))
        return np.array([signs * (1 if (k // 3) % 2 else -1) for k in range(n_steps)])
    if kind == 3:  # drive into one corner of the box and keep pushing
        actions = np.zeros((n_steps, dim))
        actions[:, :3] = rng.choice([-1, 1], 3)
        actions[:, 3:] = rng.uniform(-1, 1, (n_steps, dim - 3))
        return actions
    return np.clip(rng.standard_normal((n_steps, dim)) * 5, -9.9, 9.9)


@pytest.mark.parametrize("task", ["reach", "pick_cube", "peg_insert"])
def test_5000_random_and_adversarial_actions_stay_in_the_box(task):
    """Targets never leave the workspace box; the measured end-effector never leaves it by more than 1 cm."""
    rng = np.random.default_rng(0)
    n_actions, worst_target_m, worst_ee_m = 0, -np.inf, -np.inf
    for action_dim in (4, 7):  # half the budget each: translations only, then with rotations
        env = make_env(task, action_dim=action_dim, max_episode_steps=100)
        budget = n_actions + 2500
        while n_actions < budget:
            env.reset(seed=int(rng.integers(1 << 30)))
            for action in _adversarial_actions(rng, min(100, budget - n_actions), action_dim):
                _, _, terminated, truncated, _ = env.step(action)
                n_actions += 1
                target = env.arm.target_pos_m
                ee = env.arm.world.data.site_xpos[env.arm.world.ee_site]
                worst_target_m = max(worst_target_m, np.max(np.maximum(target - BOX_MAX, BOX_MIN - target)))
                worst_ee_m = max(worst_ee_m, np.max(np.maximum(ee - BOX_MAX, BOX_MIN - ee)))
                if terminated or truncated:
                    break
    assert n_actions == 5000
    assert worst_target_m <= 1e-12, f"commanded target left the box by {worst_target_m} m"
    assert worst_ee_m <= 0.01, f"end-effector left the box by {worst_ee_m} m"
    assert worst_ee_m > -0.005  # the actions did reach the walls, so the bound was tested


def test_estop_ends_the_episode_and_stops_the_arm():
    env = make_env("reach", max_episode_steps=50)
    env.reset(seed=0)
    for _ in range(3):  # get the arm moving fast
        env.step(np.array([1.0, 1.0, -1.0, 1.0], np.float32))
    assert np.linalg.norm(env.arm.state().ee_vel[:3]) > 0.1
    env.estop.trigger("test")
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 1.0, -1.0, 1.0], np.float32))
    assert truncated and info["estop"]
    stopped_at = env.arm.target_pos_m.copy()
    assert np.allclose(stopped_at, obs["state"][:3], atol=1e-6)  # holds where it was, not the action's target
    env.clock.wait(1.0)  # let the twin's physics run: the arm comes to rest at the stop pose
    state = env.arm.state()
    assert np.linalg.norm(state.ee_vel) < 0.01
    assert np.linalg.norm(state.ee_pos_m - stopped_at) < 0.02
    with pytest.raises(RuntimeError, match="e-stop is engaged"):
        env.reset()
    env.estop.release()
    env.reset(seed=1)
