"""The twin's reset-free task pair: cube to the green pad and back to the red one, switched without a world reset."""

import dataclasses
import time

import mujoco
import numpy as np
import pytest

from dojo.robot.env import PROPRIO_DIM
from dojo.robot.tasks import HumanReset
from dojo.sim import make_env
from dojo.sim.experts import make_expert
from dojo.sim.person import SimPerson
from dojo.sim.task_pair import (CUBE_HALF_M, DIRECTIONS, OFF_TABLE, ON_PAD_M, OPPOSITE, OUT_OF_REACH, PAD_RADIUS_M,
                                PADS_XY_M, PAIR_TASKS, START_JITTER_M, TILTED)
from dojo.sim.multitask import PutOnPadExpert
from dojo.sim.tasks import TASKS
from dojo.sim.world import WORKSPACE_MAX_M, WORKSPACE_MIN_M


def _place_cube(env, x, y, z, tilt_rad=0.0, vel=(0.0, 0.0, 0.0)):
    """Put the cube at (x, y, z), turned by `tilt_rad` about the base x axis, moving at `vel` (m/s)."""
    world, task = env.arm.world, env.task
    world.data.qpos[task._qpos:task._qpos + 7] = [x, y, z, np.cos(tilt_rad / 2), np.sin(tilt_rad / 2), 0, 0]
    world.data.qvel[task._dof:task._dof + 6] = [*vel, 0, 0, 0]
    mujoco.mj_forward(world.model, world.data)


def _attempt(env, expert) -> bool:
    terminated = truncated = False
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(expert())
    assert reward == (1.0 if info["success"] else 0.0)  # sparse reward by default
    return bool(info["success"])


def test_both_directions_are_twin_tasks_over_one_scene():
    assert {name: TASKS[name] for name in PAIR_TASKS} == PAIR_TASKS
    assert {cls.name for cls in PAIR_TASKS.values()} == {name for name, *_ in DIRECTIONS.values()}
    assert len({cls.objects_xml for cls in PAIR_TASKS.values()}) == 1
    for xy in PADS_XY_M.values():  # the whole pad lies inside the box the gripper may go to
        assert np.all(np.subtract(xy, PAD_RADIUS_M) >= WORKSPACE_MIN_M[:2])
        assert np.all(np.add(xy, PAD_RADIUS_M) <= WORKSPACE_MAX_M[:2])
    observed = {}
    for name, cls in PAIR_TASKS.items():
        env = make_env(name)
        obs, info = env.reset(seed=3)
        assert env.task.name == name and env.task.instruction == cls.instruction and not info["success"]
        assert obs["state"].shape == (PROPRIO_DIM + cls.obs_dim,)
        assert isinstance(make_expert(env), PutOnPadExpert)
        features = obs["state"][PROPRIO_DIM:]
        np.testing.assert_allclose(features[:3], env.task.cube_pos_m, atol=1e-6)
        np.testing.assert_allclose(features[3:6], env.task.cube_pos_m - obs["state"][:3], atol=1e-6)
        observed[name] = features[6:8]
    # a direction-conditioned policy tells the two apart by the target pad it observes
    np.testing.assert_allclose(observed["cube_to_green"], PADS_XY_M["green"])
    np.testing.assert_allclose(observed["cube_to_red"], PADS_XY_M["red"])
    assert TASKS["cube_to_green"].instruction != TASKS["cube_to_red"].instruction


def test_the_observation_leaves_out_the_cubes_yaw_and_the_expert_needs_none():
    """The gripper cannot turn and the cube is the same under quarter turns: the state does not change with the
    cube's yaw (a policy cannot key on the yaw its own placements leave), and the scripted expert, which never
    reads it, succeeds at every yaw a full reset draws."""
    env = make_env("cube_to_green")
    env.reset(seed=0)
    before = env.task.observation()
    world, task = env.arm.world, env.task
    world.data.qpos[task._qpos + 3:task._qpos + 7] = [np.cos(np.pi / 8), 0, 0, np.sin(np.pi / 8)]  # 45 degrees
    mujoco.mj_forward(world.model, world.data)
    np.testing.assert_array_equal(env.task.observation(), before)
    yaws = []
    for seed in range(8):
        env.reset(seed=seed)
        w, z = world.data.qpos[task._qpos + 3], world.data.qpos[task._qpos + 6]
        yaws.append(abs(np.degrees(2 * np.arctan2(z, w))))
        assert _attempt(env, make_expert(env))
    assert max(yaws) > 30


def test_a_full_reset_puts_the_cube_on_the_start_pad():
    env = make_env("cube_to_green")
    for direction in DIRECTIONS:
        env.task.set_direction(direction)
        for seed in range(20):
            env.reset(seed=seed)
            cube = env.task.cube_pos_m
            assert np.linalg.norm(cube[:2] - PADS_XY_M[env.task.start_pad]) <= START_JITTER_M + 1e-9
            assert not env.task.on_pad() and env.task.stuck_reason() is None


def test_success_is_the_cube_released_flat_on_the_target_pad():
    env = make_env("cube_to_green")
    env.reset(seed=0)
    task = env.task

    def success(xy, z=CUBE_HALF_M, tilt_rad=0.0, gripper_width_m=0.08):
        _place_cube(env, *xy, z, tilt_rad)
        state = dataclasses.replace(env.arm.state(), gripper_width_m=gripper_width_m)
        return task.success(state)

    green, red = np.array(PADS_XY_M["green"]), np.array(PADS_XY_M["red"])
    assert success(green) and task.status(env.arm.state()).reward == 1.0  # the arm at home has its fingers open
    assert success(green + [ON_PAD_M - 0.005, 0])
    assert not success(green + [ON_PAD_M + 0.005, 0])  # more than half over the pad's edge
    assert not success(green, gripper_width_m=0.04)  # still held
    assert not success(green, z=CUBE_HALF_M + 0.05)  # above the pad, not on it
    assert not success(green, tilt_rad=np.deg2rad(30))  # on its edge
    assert not success(red)
    # begin_attempt switches the goal at once and moves nothing
    qpos, qvel, t = env.arm.world.data.qpos.copy(), env.arm.world.data.qvel.copy(), env.arm.world.data.time
    task.begin_attempt("backward")
    assert task.name == "cube_to_red" and task.instruction == DIRECTIONS["backward"][1]
    np.testing.assert_array_equal(env.arm.world.data.qpos, qpos)
    np.testing.assert_array_equal(env.arm.world.data.qvel, qvel)
    assert env.arm.world.data.time == t
    np.testing.assert_allclose(task.observation()[-2:], red)
    assert task.status(env.arm.state()).success  # the cube lies on the red pad, the target now
    assert not success(green)


def test_stuck_detector_on_hand_placed_cubes():
    env = make_env("cube_to_red")
    env.reset(seed=0)
    task = env.task
    _place_cube(env, *PADS_XY_M["green"], CUBE_HALF_M)
    assert task.stuck_reason() is None
    _place_cube(env, 0.5, 0.0, -0.1)
    assert task.stuck_reason() == OFF_TABLE
    _place_cube(env, WORKSPACE_MAX_M[0] + 0.05, 0.0, CUBE_HALF_M)  # on the table beyond the gripper's reach
    assert task.stuck_reason() == OUT_OF_REACH
    _place_cube(env, 0.5, WORKSPACE_MIN_M[1] - 0.03, CUBE_HALF_M)
    assert task.stuck_reason() == OUT_OF_REACH
    # on an edge, 30 degrees over, its lower edge on the table
    tilt = np.deg2rad(30)
    edge_z = CUBE_HALF_M * (np.cos(tilt) + np.sin(tilt))
    _place_cube(env, 0.5, 0.0, edge_z, tilt)
    assert task.stuck_reason() == TILTED
    _place_cube(env, 0.5, 0.0, edge_z, tilt, vel=(0.0, 0.05, 0.0))  # still tipping over: not stuck yet
    assert task.stuck_reason() is None
    _place_cube(env, 0.5, 0.0, 0.15, tilt)  # tilted in the air (in the hand), not on the table
    assert task.stuck_reason() is None
    # a free cube does not stay on its edge: left to the physics it falls flat and the reason clears
    _place_cube(env, 0.5, 0.0, edge_z, tilt)
    env.arm.run(1.0)
    assert task.stuck_reason() is None and task._tilt_rad() < np.deg2rad(2)
    # pushed off the table's far edge (x = 0.9 m), it falls
    _place_cube(env, 0.92, 0.0, CUBE_HALF_M)
    env.arm.run(0.5)
    assert task.stuck_reason() == OFF_TABLE


def test_a_stuck_scene_is_reset_by_the_simulated_person():
    env = make_env("cube_to_green")
    env.reset(seed=1)
    env.task.begin_attempt("backward")
    env.reset()
    _place_cube(env, 0.5, 0.0, -0.2)
    assert env.task.stuck_reason() == OFF_TABLE
    person = SimPerson(delay_s=0.1)
    start = time.monotonic()
    HumanReset(person, timeout_s=5.0)(env, np.random.default_rng(0))
    assert time.monotonic() - start >= 0.1 and person.resets == 1
    # a full reset for the direction under way: the cube back on the backward attempt's start pad
    assert env.task.stuck_reason() is None and env.task.direction == "backward"
    assert np.linalg.norm(env.task.cube_pos_m[:2] - PADS_XY_M["green"]) <= START_JITTER_M + 1e-9


@pytest.mark.parametrize("task", sorted(PAIR_TASKS))
def test_expert_succeeds_in_48_of_50_episodes(task):
    env = make_env(task)
    expert = make_expert(env)
    wins = 0
    for seed in range(50):
        env.reset(seed=seed)
        wins += _attempt(env, expert)
    assert wins >= 48


def test_forward_then_backward_without_a_world_reset():
    env = make_env("cube_to_green")
    task = env.task
    chained = 0
    for seed in range(25):
        task.set_direction("forward")
        env.reset(seed=seed)  # full reset: the cube on the red pad
        forward = _attempt(env, make_expert(env))
        left_at = task.cube_pos_m
        task.begin_attempt("backward")
        _, info = env.reset()
        np.testing.assert_array_equal(task.cube_pos_m, left_at)  # the scene as the forward attempt left it
        assert info["success"] is False
        chained += forward and _attempt(env, make_expert(env))
    assert chained >= 24
    # a practice session: twenty attempts in turns from one reset, none asking for a person
    env.reset(seed=100)
    direction, wins = task.direction, 0
    for _ in range(20):
        direction = OPPOSITE[direction]
        task.begin_attempt(direction)
        env.reset()
        wins += _attempt(env, make_expert(env))
        assert task.stuck_reason() is None
    assert wins >= 19


def test_dense_reward_rises_towards_the_target_pad():
    env = make_env("cube_to_red", dense_reward=True)
    env.reset(seed=0)
    expert = make_expert(env)
    rewards = []
    for _ in range(60):
        _, reward, terminated, _, info = env.step(expert())
        rewards.append(reward)
        if terminated:
            break
    assert info["success"] and rewards[-1] == 1.0
    assert all(0.0 < r < 1.0 for r in rewards[:-1]) and max(rewards[:-1]) > rewards[0] + 0.3


def test_unknown_direction_is_refused_in_one_line():
    env = make_env("cube_to_green")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"unknown direction 'sideways'; expected one of \['backward', 'forward'\]"
                       ) as caught:
        env.task.begin_attempt("sideways")
    assert "\n" not in str(caught.value)
    assert env.task.direction == "forward"
    _, info = env.reset()  # the refused call left no reset-free attempt pending: a full reset
    assert np.linalg.norm(env.task.cube_pos_m[:2] - PADS_XY_M["red"]) <= START_JITTER_M + 1e-9
