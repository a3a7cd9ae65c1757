"""The twin's tasks (reach, pick_cube, peg_insert): reset distribution, success, reward, instruction.

Each task owns the MJCF of its objects (`objects_xml`) and reads privileged simulator state for its
success flag and its observation features. Rewards are sparse (1.0 on success) unless `dense_reward`.
"""

from __future__ import annotations

import mujoco
import numpy as np

from dojo.robot.interfaces import ArmState, Task, TaskStatus
from dojo.sim.world import WORKSPACE_MAX_M, WORKSPACE_MIN_M, SimWorld


def _hemisphere(quat_wxyz: np.ndarray) -> np.ndarray:
    return quat_wxyz if quat_wxyz[0] >= 0 else -quat_wxyz


def _yaw_quat(yaw_rad: float) -> np.ndarray:
    return np.array([np.cos(yaw_rad / 2), 0.0, 0.0, np.sin(yaw_rad / 2)])


class SimTask(Task):
    objects_xml = ""
    # End-effector target box for this task (base frame); make_env hands it to the safety layer.
    workspace_min_m: tuple[float, float, float] = WORKSPACE_MIN_M
    workspace_max_m: tuple[float, float, float] = WORKSPACE_MAX_M

    def __init__(self, world: SimWorld, dense_reward: bool = False) -> None:
        self.world, self.dense_reward = world, bool(dense_reward)

    def status(self, arm_state: ArmState, obs: dict | None = None, teleop=None) -> TaskStatus:
        success = self.success(arm_state)
        reward = 1.0 if success else (self.dense(arm_state) if self.dense_reward else 0.0)
        return TaskStatus(reward=float(reward), success=bool(success))

    def success(self, arm_state: ArmState) -> bool:
        raise NotImplementedError

    def dense(self, arm_state: ArmState) -> float:
        """A shaped reward in [0, 1) for when the task is not yet solved."""
        raise NotImplementedError


class Reach(SimTask):
    """Move the end-effector to a goal point drawn uniformly from a box above the table."""

    name = "reach"
    instruction = "move the gripper to the red ball"
    obs_dim = 6  # goal position, goal - end-effector
    goal_min_m = (0.35, -0.2, 0.05)
    goal_max_m = (0.6, 0.2, 0.35)
    success_radius_m = 0.025
    objects_xml = """
<body name="goal" mocap="true" pos="0.5 0 0.2">
  <geom type="sphere" size="0.02" rgba="1 0.15 0.15 0.7" contype="0" conaffinity="0"/>
</body>"""

    def __init__(self, world: SimWorld, dense_reward: bool = False) -> None:
        super().__init__(world, dense_reward)
        self._mocap = world.model.body("goal").mocapid[0]

    @property
    def goal_m(self) -> np.ndarray:
        return self.world.data.mocap_pos[self._mocap].copy()

    def reset(self, rng: np.random.Generator) -> None:
        self.world.reset()
        self.world.data.mocap_pos[self._mocap] = rng.uniform(self.goal_min_m, self.goal_max_m)
        self.world.finish_reset(rng)

    def _distance_m(self, ee_pos_m: np.ndarray) -> float:
        return float(np.linalg.norm(self.goal_m - ee_pos_m))

    def success(self, arm_state: ArmState) -> bool:
        return self._distance_m(arm_state.ee_pos_m) < self.success_radius_m

    def dense(self, arm_state: ArmState) -> float:
        return 0.9 * (1.0 - np.tanh(10.0 * self._distance_m(arm_state.ee_pos_m)))

    def observation(self) -> np.ndarray:
        ee = self.world.data.site_xpos[self.world.ee_site]
        return np.concatenate([self.goal_m, self.goal_m - ee]).astype(np.float32)


class PickCube(SimTask):
    """Lift a 4 cm cube, placed at a random position and yaw on the table, 10 cm above its rest height."""

    name = "pick_cube"
    instruction = "pick up the red cube"
    obs_dim = 10  # cube position, cube quaternion, cube - end-effector
    half_size_m = 0.02
    lift_m = 0.10
    xy_min_m = (0.38, -0.18)
    xy_max_m = (0.60, 0.18)
    objects_xml = f"""
<body name="cube" pos="0.5 0 {half_size_m}">
  <freejoint name="cube"/>
  <geom name="cube" class="object" type="box" size="{half_size_m} {half_size_m} {half_size_m}" mass="0.08"
        rgba="0.85 0.15 0.15 1"/>
</body>"""

    def __init__(self, world: SimWorld, dense_reward: bool = False) -> None:
        super().__init__(world, dense_reward)
        self._qpos = world.model.joint("cube").qposadr[0]
        self._body = world.model.body("cube").id

    @property
    def cube_pos_m(self) -> np.ndarray:
        return self.world.data.xpos[self._body].copy()

    def reset(self, rng: np.random.Generator) -> None:
        self.world.reset()
        xy = rng.uniform(self.xy_min_m, self.xy_max_m)
        yaw = rng.uniform(-np.pi / 4, np.pi / 4)  # a cube is symmetric under quarter turns
        self.world.data.qpos[self._qpos:self._qpos + 7] = [*xy, self.half_size_m, *_yaw_quat(yaw)]
        self.world.finish_reset(rng)

    def success(self, arm_state: ArmState) -> bool:
        return bool(self.cube_pos_m[2] >= self.half_size_m + self.lift_m)

    def dense(self, arm_state: ArmState) -> float:
        reach = 1.0 - np.tanh(10.0 * np.linalg.norm(self.cube_pos_m - arm_state.ee_pos_m))
        lift = np.clip((self.cube_pos_m[2] - self.half_size_m) / self.lift_m, 0.0, 1.0)
        return 0.45 * reach + 0.45 * lift

    def observation(self) -> np.ndarray:
        d = self.world.data
        pos = d.xpos[self._body]
        return np.concatenate([pos, _hemisphere(d.xquat[self._body]), pos - d.site_xpos[self.world.ee_site]]
                              ).astype(np.float32)


class PegInsert(SimTask):
    """Insert a square peg, already grasped, into a square hole in a block at a random table position.

    As in SERL's peg insertion the episode starts with the peg held in the closed gripper (the
    grasp is not part of the task); the gripper stays closed unless the policy opens it. The peg is
    2.2 cm square, the hole 2.6 cm square (4 mm clearance, 2 mm a side) and 4 cm deep; success is
    the peg's tip at least 2 cm inside the hole.
    """

    name = "peg_insert"
    instruction = "insert the peg into the hole"
    obs_dim = 13  # peg position, peg quaternion, hole top centre, peg tip - hole top centre
    peg_half_m = 0.011
    peg_half_len_m = 0.04
    hole_half_m = 0.013
    block_half_m = 0.05
    block_height_m = 0.04
    insert_depth_m = 0.02
    # The peg's centre sits this far below the end-effector site, along the site's z axis.
    peg_below_ee_m = 0.005
    # The held peg reaches 4.5 cm below the end-effector: a floor 5 cm up keeps it off the table,
    # and still lets it go 3.5 cm into the hole.
    workspace_min_m = (WORKSPACE_MIN_M[0], WORKSPACE_MIN_M[1], 0.05)
    xy_min_m = (0.42, -0.15)
    xy_max_m = (0.58, 0.15)

    @classmethod
    def _objects_xml(cls) -> str:
        h, big, hz = cls.hole_half_m, cls.block_half_m, cls.block_height_m / 2
        wall = (big - h) / 2
        walls = [((h + wall, 0), (wall, big)), ((-h - wall, 0), (wall, big)),
                 ((0, h + wall), (h, wall)), ((0, -h - wall), (h, wall))]
        geoms = "\n".join(f'<geom class="object" type="box" pos="{x} {y} {hz}" size="{sx} {sy} {hz}" '
                          f'rgba="0.25 0.45 0.8 1"/>' for (x, y), (sx, sy) in walls)
        p, pl = cls.peg_half_m, cls.peg_half_len_m
        return f"""
<body name="hole" mocap="true" pos="0.5 0 0">
{geoms}
</body>
<body name="peg" pos="0.5 0.2 {pl}">
  <freejoint name="peg"/>
  <geom name="peg" class="object" type="box" size="{p} {p} {pl}" mass="0.05" rgba="0.9 0.6 0.1 1"/>
</body>"""

    def __init__(self, world: SimWorld, dense_reward: bool = False) -> None:
        super().__init__(world, dense_reward)
        m = world.model
        self._hole = m.body("hole").mocapid[0]
        self._peg = m.body("peg").id
        self._peg_qpos = m.joint("peg").qposadr[0]

    @property
    def hole_top_m(self) -> np.ndarray:
        return self.world.data.mocap_pos[self._hole] + np.array([0.0, 0.0, self.block_height_m])

    @property
    def peg_tip_m(self) -> np.ndarray:
        """Centre of the peg's lower face (the end that goes in first)."""
        d = self.world.data
        return d.xpos[self._peg] - d.xmat[self._peg].reshape(3, 3)[:, 2] * self.peg_half_len_m

    def reset(self, rng: np.random.Generator) -> None:
        w = self.world
        m, d = w.model, w.data
        w.reset()
        d.mocap_pos[self._hole] = [*rng.uniform(self.xy_min_m, self.xy_max_m), 0.0]
        # Place the peg between the fingers of the arm at home and close the fingers on it.
        mujoco.mj_kinematics(m, d)
        ee_mat = d.site_xmat[w.ee_site].reshape(3, 3)
        peg_pos = d.site_xpos[w.ee_site] - ee_mat[:, 2] * self.peg_below_ee_m
        peg_quat = np.empty(4)
        mujoco.mju_mat2Quat(peg_quat, d.site_xmat[w.ee_site])
        d.qpos[self._peg_qpos:self._peg_qpos + 7] = [*peg_pos, *peg_quat]
        d.qpos[w.finger_qpos] = self.peg_half_m - 2e-4  # a slight squeeze so the contact exists from step 0
        d.ctrl[w.finger_act] = 0.0
        w.finish_reset(rng)

    def _tip_error_m(self) -> np.ndarray:
        return self.peg_tip_m - self.hole_top_m

    def success(self, arm_state: ArmState) -> bool:
        err = self._tip_error_m()
        return bool(np.all(np.abs(err[:2]) < self.hole_half_m) and err[2] <= -self.insert_depth_m)

    def dense(self, arm_state: ArmState) -> float:
        err = self._tip_error_m() + np.array([0.0, 0.0, self.insert_depth_m])
        return 0.9 * (1.0 - np.tanh(10.0 * np.linalg.norm(err)))

    def observation(self) -> np.ndarray:
        d = self.world.data
        return np.concatenate([d.xpos[self._peg], _hemisphere(d.xquat[self._peg]), self.hole_top_m,
                               self._tip_error_m()]).astype(np.float32)


PegInsert.objects_xml = PegInsert._objects_xml()

TASKS: dict[str, type[SimTask]] = {cls.name: cls for cls in (Reach, PickCube, PegInsert)}

# The multi-task language scene (one task per instruction) and the reset-free task pair register themselves in
# TASKS; imported last because they build on the classes above, and here so that every reader of TASKS sees them.
import dojo.sim.multitask  # noqa: E402,F401
import dojo.sim.task_pair  # noqa: E402,F401
