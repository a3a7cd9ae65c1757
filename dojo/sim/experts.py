"""Scripted experts for the twin's tasks: privileged-state controllers that act through the env's [-1, 1] actions.

Each expert is a function of the current simulator state only (no memory), so it recovers from a slip
by re-planning. `make_expert(env)` works for any action_dim (4 or 7), action_frame and action scale.
`aim_offset_m` (base frame, m) shifts where an expert believes its target is (the cube, the goal, the
hole): a systematic misjudgement that a sloppy operator repeats every time, unlike zero-mean noise.
"""

from __future__ import annotations

import numpy as np

from dojo.robot import geometry
from dojo.robot.env import RobotEnv
from dojo.sim.tasks import PegInsert, PickCube, Reach

OPEN, CLOSED = 1.0, -1.0


def twin_task(env):
    """The twin task behind an env: its own, or the scene of a station's task (dojo.robot.tasks.StationTask)."""
    task = getattr(env, "unwrapped", env).task
    return getattr(task, "scene", None) or task


class Expert:
    def __init__(self, env: RobotEnv, aim_offset_m=(0.0, 0.0, 0.0)) -> None:
        env = getattr(env, "unwrapped", env)
        self.env, self.task, self.arm = env, twin_task(env), env.arm
        try:
            offset = np.asarray(aim_offset_m, dtype=np.float64)
            valid = offset.shape == (3,) and bool(np.all(np.isfinite(offset)))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"aim_offset_m must be 3 finite numbers (x, y, z in m), got {aim_offset_m!r}")
        self.aim_offset_m = offset

    def __call__(self, obs=None) -> np.ndarray:
        state = self.arm.state()
        delta_m, gripper = self.plan(state)
        return self.to_action(state, delta_m, gripper)

    def plan(self, state) -> tuple[np.ndarray, float]:
        """The end-effector displacement wanted this step (base frame, m) and the gripper command."""
        raise NotImplementedError

    def to_action(self, state, delta_m: np.ndarray, gripper: float) -> np.ndarray:
        cfg = self.env.config
        rot = geometry.quat_to_mat(state.ee_quat_wxyz)
        if cfg.action_frame == "ee":
            delta_m = rot.T @ delta_m
        parts = [delta_m / cfg.action_scale_m]
        if cfg.action_dim == 7:  # hold the orientation the episode started with
            err = geometry.quat_to_rotvec(geometry.quat_mul(self.env._home_quat,
                                                            geometry.quat_conj(state.ee_quat_wxyz)))
            parts.append((rot.T @ err if cfg.action_frame == "ee" else err) / cfg.action_scale_rad)
        parts.append([gripper])
        return np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32)


class ReachExpert(Expert):
    def plan(self, state):
        return self.task.goal_m + self.aim_offset_m - state.ee_pos_m, OPEN


class PickCubeExpert(Expert):
    """Above the cube, down to its centre, close, lift; starts over if the cube is lost."""

    above_m = 0.06
    lift_to_m = PickCube.half_size_m + PickCube.lift_m + 0.05

    def plan(self, state):
        cube = self.task.cube_pos_m + self.aim_offset_m
        err = cube - state.ee_pos_m
        grasp_z = max(cube[2], 0.02)
        # Closed on the cube: fingers at rest no wider than its diagonal (a turned cube is held by two edges).
        finger_speed = np.abs(self.arm.world.data.qvel[self.arm.world.finger_dof]).max()
        held = (np.linalg.norm(err) < 0.02 and state.gripper_width_m < 2 * np.sqrt(2) * PickCube.half_size_m + 0.002
                and finger_speed < 0.01)
        if held:
            return np.array([0.0, 0.0, self.lift_to_m - state.ee_pos_m[2]]), CLOSED
        if np.linalg.norm(err[:2]) > 0.012:  # line up above the cube before going down
            target = np.array([cube[0], cube[1], max(grasp_z + self.above_m, state.ee_pos_m[2] - 0.03)])
            return target - state.ee_pos_m, OPEN
        if state.ee_pos_m[2] - grasp_z > 0.008:
            return np.array([err[0], err[1], grasp_z - state.ee_pos_m[2]]), OPEN
        return np.array([err[0], err[1], 0.0]), CLOSED


class PegInsertExpert(Expert):
    """Line the peg's tip up over the hole, then push it straight down; back off if it lands on the rim."""

    hover_m = 0.012  # tip height above the hole's top while lining up

    def plan(self, state):
        tip_err = self.task.peg_tip_m - (self.task.hole_top_m + self.aim_offset_m)
        lateral = np.linalg.norm(tip_err[:2])
        slack_m = PegInsert.hole_half_m - PegInsert.peg_half_m + 0.001
        inside = tip_err[2] < 0.002 and np.all(np.abs(tip_err[:2]) < slack_m)
        if inside or lateral < 0.0015:  # push straight down, still centring
            return np.array([-tip_err[0], -tip_err[1], -PegInsert.insert_depth_m - 0.01 - tip_err[2]]), CLOSED
        if tip_err[2] < self.hover_m - 0.004:  # off target and low: rise clear of the rim first
            return np.array([0.0, 0.0, self.hover_m - tip_err[2]]), CLOSED
        return np.array([-tip_err[0], -tip_err[1], self.hover_m - tip_err[2]]), CLOSED


EXPERTS = {Reach.name: ReachExpert, PickCube.name: PickCubeExpert, PegInsert.name: PegInsertExpert}


def make_expert(env, aim_offset_m=(0.0, 0.0, 0.0)) -> Expert:
    """The scripted expert for `env`'s task (a twin env, possibly gymnasium-wrapped), aiming `aim_offset_m` off."""
    name = twin_task(env).name
    if name not in EXPERTS:
        raise ValueError(f"no scripted expert for task {name!r}; expected one of {sorted(EXPERTS)}")
    return EXPERTS[name](env, aim_offset_m)
