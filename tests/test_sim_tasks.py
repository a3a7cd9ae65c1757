"""The twin's tasks: geometry as documented, success flags that track the physical state, object features."""

import mujoco
import numpy as np

from dojo.sim import make_env
from dojo.sim.tasks import PegInsert, PickCube

CLOSED = -1.0


def test_peg_and_hole_clearance_is_at_most_5_mm():
    env = make_env("peg_insert")
    m = env.arm.world.model
    peg_width_m = 2 * m.geom("peg").size[0]
    hole_geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] == m.body("hole").id]
    # the hole's width is the gap between the inner faces of the two walls across x
    inner_faces = [abs(m.geom_pos[g][0]) - m.geom_size[g][0] for g in hole_geoms if abs(m.geom_pos[g][0]) > 1e-9]
    hole_width_m = 2 * min(inner_faces)
    assert 0 < hole_width_m - peg_width_m <= 0.005


def test_peg_starts_grasped_and_stays_in_hand():
    env = make_env("peg_insert")
    env.reset(seed=0)
    d, w = env.arm.world.data, env.arm.world

    def peg_in_ee():
        return d.xpos[m_peg] - d.site_xpos[w.ee_site]

    m_peg = w.model.body("peg").id
    start = peg_in_ee()
    for action in [[0, 0, 0, CLOSED]] * 5 + [[1, 1, 1, CLOSED]] * 5 + [[-1, -1, 0, CLOSED]] * 5:
        env.step(np.array(action, np.float32))
    assert np.linalg.norm(peg_in_ee() - start) < 0.003  # carried through fast moves without slipping
    env.step(np.array([0, 0, 0, 1.0], np.float32))  # opening the gripper drops it
    for _ in range(5):
        env.step(np.array([0, 0, 0, 1.0], np.float32))
    assert d.xpos[m_peg][2] < PegInsert.peg_half_len_m + 0.01


def test_pick_success_follows_the_cube_height():
    env = make_env("pick_cube")
    env.reset(seed=0)
    d, task = env.arm.world.data, env.task
    qpos = env.arm.world.model.joint("cube").qposadr[0]
    assert not task.status(env.arm.state()).success
    d.qpos[qpos + 2] = PickCube.half_size_m + PickCube.lift_m + 0.001
    mujoco.mj_forward(env.arm.world.model, d)
    status = task.status(env.arm.state())
    assert status.success and status.reward == 1.0


def test_object_features_are_privileged_state():
    env = make_env("pick_cube")
    obs, _ = env.reset(seed=4)
    cube = obs["state"][14:17]
    assert np.allclose(cube, env.task.cube_pos_m, atol=1e-6)
    assert np.allclose(obs["state"][21:24], cube - obs["state"][:3], atol=1e-6)
    reach = make_env("reach")
    obs, _ = reach.reset(seed=4)
    assert np.allclose(obs["state"][14:17], reach.task.goal_m, atol=1e-6)
    assert reach.task.instruction and env.task.instruction != reach.task.instruction


def test_peg_insert_success_needs_the_peg_in_the_hole():
    env = make_env("peg_insert")
    env.reset(seed=2)
    assert not env.task.status(env.arm.state()).success
    # a peg beside the block, as low as it can get, does not count
    w = env.arm.world
    qpos = w.model.joint("peg").qposadr[0]
    beside = env.task.hole_top_m + np.array([0.08, 0.0, 0.0])
    w.data.qpos[qpos:qpos + 3] = [beside[0], beside[1], PegInsert.peg_half_len_m]
    mujoco.mj_forward(w.model, w.data)
    assert not env.task.status(env.arm.state()).success
    inside = env.task.hole_top_m
    w.data.qpos[qpos:qpos + 3] = [inside[0], inside[1], PegInsert.peg_half_len_m]  # tip on the hole's floor
    w.data.qpos[qpos + 3:qpos + 7] = [1, 0, 0, 0]
    mujoco.mj_forward(w.model, w.data)
    assert env.task.status(env.arm.state()).success
