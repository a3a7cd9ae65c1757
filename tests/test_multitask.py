"""The twin's multi-task language scene: one scene, one task per instruction, their experts and mixed-quality data."""

import importlib.util
import json
import os

import mujoco
import numpy as np
import pytest

from dojo.launch.cli import main as dojo_main
from dojo.replay.store import open_store
from dojo.robot.env import PROPRIO_DIM
from dojo.sim import make_env
from dojo.sim.experts import make_expert
from dojo.sim.multitask import (CUBE_HALF_M, INSTRUCTIONS, PAD_HALF_M, PUSH_GOAL_Y_M, QUALITIES, SCENE_TASKS,
                                ScenePushLeft, sample_layout)
from dojo.sim.operators import ScriptedOperator, run_episodes
from dojo.sim.tasks import TASKS
from dojo.sim.world import WORKSPACE_MAX_M, WORKSPACE_MIN_M

BENCHMARK = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "scene_dataset.py")


def test_every_instruction_is_a_twin_task_in_one_scene():
    assert len(set(INSTRUCTIONS.values())) == len(SCENE_TASKS) >= 4
    assert {name: TASKS[name] for name in SCENE_TASKS} == SCENE_TASKS
    assert len({cls.objects_xml for cls in SCENE_TASKS.values()}) == 1  # one scene
    states = []
    for name, instruction in INSTRUCTIONS.items():
        env = make_env(name, seed=0)
        obs, info = env.reset(seed=5)
        assert env.task.instruction == instruction and not info["success"]
        assert obs["state"].shape == (PROPRIO_DIM + env.task.obs_dim,)
        states.append(obs["state"])
        env.close()
    # the same seed gives the same layout whatever the instruction
    np.testing.assert_array_equal(np.stack(states), np.broadcast_to(states[0], np.shape(states)))


def test_layouts_lie_in_the_workspace_and_leave_room_for_every_instruction():
    rng = np.random.default_rng(0)
    for _ in range(500):
        layout = sample_layout(rng)
        red, blue, pad = layout["red"], layout["blue"], layout["pad"]
        for x, y, _ in (red, blue):
            assert WORKSPACE_MIN_M[0] <= x <= WORKSPACE_MAX_M[0]
            # the push starts behind the cube's right side, inside the box the safety layer allows
            assert WORKSPACE_MIN_M[1] <= y - ScenePushLeft.behind_m and y < PUSH_GOAL_Y_M - 0.09
            assert abs(y - pad[1]) > PAD_HALF_M  # no cube starts on the pad
        assert abs(red[0] - blue[0]) >= 0.09  # neither cube stands in the other's push lane
        assert pad[1] + PAD_HALF_M <= WORKSPACE_MAX_M[1]


def _place_cube(env, color, x, y, z):
    task, world = env.task, env.arm.world
    world.data.qpos[task._qpos[color]:task._qpos[color] + 7] = [x, y, z, 1, 0, 0, 0]
    mujoco.mj_forward(world.model, world.data)


def test_success_is_what_the_instruction_says():
    envs = {name: make_env(name) for name in ("scene_pick_red", "scene_push_red_left", "scene_put_red_on_pad")}
    for env in envs.values():
        env.reset(seed=1)
    pad_x, pad_y = envs["scene_put_red_on_pad"].task.pad_xy_m

    def success(name, x, y, z, gripper_width_m=0.08):
        env = envs[name]
        _place_cube(env, "red", x, y, z)
        state = env.arm.state()
        state = type(state)(**{**state.__dict__, "gripper_width_m": gripper_width_m})
        return env.task.success(state)

    rest = CUBE_HALF_M
    assert success("scene_put_red_on_pad", pad_x, pad_y, rest)
    assert not success("scene_put_red_on_pad", pad_x, pad_y, rest, gripper_width_m=0.04)  # still held
    assert not success("scene_put_red_on_pad", pad_x, pad_y, rest + 0.05)  # above the pad, not on it
    assert not success("scene_put_red_on_pad", pad_x + PAD_HALF_M, pad_y, rest)  # on its edge
    assert success("scene_push_red_left", 0.5, PUSH_GOAL_Y_M + 0.01, rest)
    assert not success("scene_push_red_left", 0.5, PUSH_GOAL_Y_M - 0.01, rest)
    assert not success("scene_push_red_left", 0.5, PUSH_GOAL_Y_M + 0.01, rest + 0.05)  # carried there
    assert success("scene_pick_red", 0.5, 0.0, rest + 0.11) and not success("scene_pick_red", 0.5, 0.0, rest)
    for env in envs.values():
        env.close()


@pytest.mark.parametrize("name", sorted(SCENE_TASKS))
def test_expert_succeeds_on_each_instruction_in_90_percent_of_20_episodes(name):
    env = make_env(name, dense_reward=True)
    result = run_episodes(env, ScriptedOperator(env, seed=0, **QUALITIES["expert"]), episodes=20, seed=1000)
    assert result["success_rate"] >= 0.9
    # the dense progress (the oracle critic) stays in [0, 1) before success and rises along the expert's path
    env.reset(seed=3)
    expert, rewards, done = make_expert(env), [], False
    while not done:
        _, reward, terminated, truncated, info = env.step(expert())
        rewards.append(reward)
        done = terminated or truncated
    assert info["success"] and rewards[-1] == 1.0
    assert all(0.0 <= r < 1.0 for r in rewards[:-1]) and rewards[-2] > rewards[0] + 0.3
    env.close()


def test_a_random_policy_rarely_succeeds():
    wins = 0
    for name in SCENE_TASKS:
        env = make_env(name, max_episode_steps=30)
        env.action_space.seed(0)
        env.reset(seed=0)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(env.action_space.sample())
            done = terminated or truncated
        wins += info["success"]
        env.close()
    assert wins <= 1


def test_dojo_record_stores_the_instruction(tmp_path, capsys):
    store = tmp_path / "push.zarr"
    assert dojo_main(["record", "--sim", "scene_push_blue_left", "--episodes", "2", "--out", str(store)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["success_rate"] == 1.0
    episodes = [open_store(store).episode(i).info for i in range(2)]
    assert {(e.task, e.instruction) for e in episodes} == {("scene_push_blue_left", "push the blue cube to the left")}


def test_mixed_quality_dataset_has_instructions_successes_and_failures(tmp_path):
    spec = importlib.util.spec_from_file_location("scene_dataset", BENCHMARK)
    scene_dataset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scene_dataset)
    tasks = ["scene_pick_blue", "scene_put_red_on_pad"]
    result = scene_dataset.record_scene_dataset(tmp_path / "mixed.zarr", 3, ("expert", "0.3/0.5"), tasks,
                                                max_episode_steps=40)
    assert result["episodes"] == 12
    assert all(rates["expert"] == 1.0 and rates["skill=0.3,noise_std=0.5"] < 1.0
               for rates in result["success_rate"].values())
    store = open_store(tmp_path / "mixed.zarr")
    infos = [store.episode(i).info for i in range(store.num_episodes)]
    assert [(e.task, e.instruction) for e in infos] == [(t, INSTRUCTIONS[t]) for t in tasks for _ in range(6)]
    assert {e.operator for e in infos} == {"sim-operator:expert", "sim-operator:skill=0.3,noise_std=0.5"}
    # every instruction sees the same layouts: reset seeds repeat across instructions
    assert [e.reset_seed for e in infos[:6]] == [e.reset_seed for e in infos[6:]]
    with pytest.raises(ValueError, match="quality must be one of .* got 'great'"):
        scene_dataset.parse_quality("great")
