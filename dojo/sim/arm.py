"""The twin's arm: an operational-space controller on the MuJoCo arm, behind the real driver's `Arm` API.

`SimClock.wait` is what advances physics: it runs the controller at `1 / (control_every * dt)` Hz
(250 Hz by default) for one control period, so the env's fixed control rate is simulated time.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import mujoco
import numpy as np

from dojo.robot.interfaces import Arm, ArmState, Clock
from dojo.sim.world import HOME_Q_RAD, MAX_GRIPPER_WIDTH_M, SimWorld


@dataclasses.dataclass(frozen=True)
class ControllerGains:
    """Task-space gains are accelerations per unit error (1/s^2, 1/s): the OSC decouples the arm's inertia."""

    kp_pos: float = 900.0
    kd_pos: float = 60.0  # 2 * sqrt(kp): critically damped
    kp_rot: float = 300.0  # softer than translation: fast wrist turns must not drag the end-effector
    kd_rot: float = 35.0
    kp_null_nm: float = 40.0  # posture stiffness towards home_q, Nm/rad
    kd_null_nm: float = 8.0
    lambda_damping: float = 1e-2  # added to J M^-1 J^T's diagonal before inverting it
    limit_margin_rad: float = 0.2  # joint-limit avoidance starts this close to a limit
    k_limit_nm: float = 300.0  # its stiffness, Nm/rad, not projected: the limits outrank the task
    max_pos_error_m: float = 0.05  # clamps the pull of a far target, so a big jump cannot whip the arm
    max_rot_error_rad: float = 0.5


class SimArm(Arm):
    """Cartesian impedance (operational-space) control of the 7 arm joints; position-controlled fingers."""

    n_joints = SimWorld.n_arm_joints
    max_gripper_width_m = MAX_GRIPPER_WIDTH_M

    def __init__(self, world: SimWorld, home_q_rad: np.ndarray = HOME_Q_RAD,
                 gains: ControllerGains = ControllerGains(), control_every: int = 1) -> None:
        if not (isinstance(control_every, int) and control_every >= 1):
            raise ValueError(f"control_every must be a positive integer of physics steps, got {control_every!r}")
        self.world, self.gains, self.control_every = world, gains, control_every
        self.home_q_rad = self._check_q(home_q_rad)
        self.control_dt_s = world.model.opt.timestep * control_every
        m = world.model
        self._jac = np.zeros((6, m.nv))
        self._jacp, self._jacr = self._jac[:3], self._jac[3:]  # views: mj_jacSite fills _jac in place
        self._minv_jt = np.zeros((6, m.nv))
        self._quat, self._quat_conj, self._err_quat = np.zeros(4), np.zeros(4), np.zeros(4)
        self._err_rot, self._vel6, self._force = np.zeros(3), np.zeros(6), np.zeros(6)
        self._diag6 = np.diag_indices(6)
        q_lo, q_hi = world.model.jnt_range[:self.n_joints].T
        self._q_soft_lo, self._q_soft_hi = q_lo + gains.limit_margin_rad, q_hi - gains.limit_margin_rad
        self._err6 = np.zeros(6)
        self._kp6 = np.array([gains.kp_pos] * 3 + [gains.kp_rot] * 3)
        self._kd6 = np.array([gains.kd_pos] * 3 + [gains.kd_rot] * 3)
        # Cached views into MjData's fixed buffers (each attribute access would build a new view).
        n, d = self.n_joints, world.data
        self._jac_arm = self._jac[:, :n]
        self._q, self._dq, self._bias, self._ctrl = d.qpos[:n], d.qvel[:n], d.qfrc_bias[:n], d.ctrl[:n]
        self._ee_pos, self._ee_mat = d.site_xpos[world.ee_site], d.site_xmat[world.ee_site]
        self.target_pos_m = np.zeros(3)
        self.target_quat_wxyz = np.array([1.0, 0.0, 0.0, 0.0])
        # Called at the start of every controller tick, before the torques: how twin devices that keep
        # time with the physics (late commands, cameras capturing at their own rate) see each instant.
        self.tick_hooks: list[Callable[[], None]] = []

    # --- Arm API --------------------------------------------------------------------------------
    def state(self) -> ArmState:
        m, d, w = self.world.model, self.world.data, self.world
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[w.ee_site])
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_SITE, w.ee_site, self._vel6, 0)
        n = self.n_joints
        return ArmState(joint_q_rad=d.qpos[:n].copy(), joint_dq_rad_s=d.qvel[:n].copy(),
                        ee_pos_m=d.site_xpos[w.ee_site].copy(), ee_quat_wxyz=quat,
                        ee_vel=np.concatenate([self._vel6[3:], self._vel6[:3]]),  # MuJoCo gives (rot, lin)
                        gripper_width_m=float(d.qpos[w.finger_qpos].sum()), timestamp_s=float(d.time))

    def command(self, target_pos_m: np.ndarray, target_quat_wxyz: np.ndarray, gripper_width_m: float) -> None:
        pos = np.asarray(target_pos_m, dtype=np.float64).reshape(-1)
        quat = np.asarray(target_quat_wxyz, dtype=np.float64).reshape(-1)
        if pos.shape != (3,) or quat.shape != (4,):
            raise ValueError(f"target must be a 3-vector and a wxyz quaternion, got shapes {pos.shape}, {quat.shape}")
        norm = np.linalg.norm(quat)
        if not (np.all(np.isfinite(pos)) and np.isfinite(norm) and norm > 1e-6 and np.isfinite(gripper_width_m)):
            raise ValueError(f"target must be finite with a non-zero quaternion, got pos={pos}, quat={quat}, "
                             f"gripper_width_m={gripper_width_m}")
        self._set_target(pos, quat / norm)
        width = float(np.clip(gripper_width_m, 0.0, self.max_gripper_width_m))
        self.world.data.ctrl[self.world.finger_act] = width / 2

    def reset_to(self, joint_q_rad: np.ndarray) -> None:
        """Teleport the arm to `joint_q_rad` at rest and hold the pose there; the gripper is left as it is."""
        q = self._check_q(joint_q_rad)
        m, d = self.world.model, self.world.data
        d.qpos[:self.n_joints] = q
        d.qvel[:self.n_joints] = 0.0
        mujoco.mj_forward(m, d)
        self.hold()

    def stop(self) -> None:
        """Hold the current end-effector pose; the damping terms bring the arm to rest."""
        self.hold()

    # --- twin-only ------------------------------------------------------------------------------
    def hold(self) -> None:
        d = self.world.data
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[self.world.ee_site])
        self._set_target(d.site_xpos[self.world.ee_site].copy(), quat)

    def run(self, duration_s: float) -> None:
        """Advance physics by `duration_s` (rounded to whole controller ticks), recomputing torques each tick."""
        if not (np.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
        m, d = self.world.model, self.world.data
        for _ in range(max(1, round(duration_s / self.control_dt_s))):
            for hook in self.tick_hooks:
                hook()
            self._apply_torques()
            mujoco.mj_step(m, d, self.control_every)
        # mj_step leaves poses (xpos, site_xpos) from before its last integration; bring them up to
        # qpos so that states, task features and camera frames all show the same instant.
        mujoco.mj_forward(m, d)

    def _set_target(self, pos: np.ndarray, quat: np.ndarray) -> None:
        self.target_pos_m = pos
        self.target_quat_wxyz = quat

    def _check_q(self, joint_q_rad) -> np.ndarray:
        q = np.asarray(joint_q_rad, dtype=np.float64).reshape(-1)
        lo, hi = self.world.model.jnt_range[:self.n_joints].T
        if q.shape != (self.n_joints,) or not np.all(np.isfinite(q)) or np.any(q < lo) or np.any(q > hi):
            raise ValueError(f"joint_q_rad must be {self.n_joints} finite angles within the joint limits "
                             f"{np.round(lo, 3).tolist()}..{np.round(hi, 3).tolist()}, got {q}")
        return q

    def _apply_torques(self) -> None:
        """Operational-space control: tau = J^T Lambda (Kp e - Kd v) + nullspace posture + bias forces.

        Uses the kinematics and mass matrix from the previous physics step's forward pass (stale
        by at most `control_every` steps), as a real torque controller works on its last sample.
        Everything is preallocated and the views cached: this runs 25 times per 10 Hz env step.
        """
        m, d, g, n = self.world.model, self.world.data, self.gains, self.n_joints
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.world.ee_site)
        mujoco.mj_solveM(m, d, self._minv_jt, self._jac)  # rows of M^-1 J^T
        jac = self._jac_arm
        inv_lambda = self._jac @ self._minv_jt.T  # J M^-1 J^T = Lambda^-1, 6x6
        # Damped near singularities (the wrist is close to one when reaching low): caps the effective mass.
        inv_lambda[self._diag6] += g.lambda_damping

        vel = jac @ self._dq
        err = self._err6
        err[:3] = self.target_pos_m - self._ee_pos
        norm = np.sqrt(err[:3] @ err[:3])
        if norm > g.max_pos_error_m:
            err[:3] *= g.max_pos_error_m / norm
        mujoco.mju_mat2Quat(self._quat, self._ee_mat)
        mujoco.mju_negQuat(self._quat_conj, self._quat)
        mujoco.mju_mulQuat(self._err_quat, self.target_quat_wxyz, self._quat_conj)
        mujoco.mju_quat2Vel(self._err_rot, self._err_quat, 1.0)
        norm = np.sqrt(self._err_rot @ self._err_rot)
        err[3:] = self._err_rot if norm <= g.max_rot_error_rad else self._err_rot * (g.max_rot_error_rad / norm)
        acc = self._kp6 * err - self._kd6 * vel

        # Posture torque projected into the task's dynamically consistent nullspace:
        # tau = J^T Lambda (acc - J M^-1 tau_null) + tau_null, one 6x6 Cholesky solve for both terms.
        tau_null = g.kp_null_nm * (self.home_q_rad - self._q) - g.kd_null_nm * self._dq
        mujoco.mju_cholFactor(inv_lambda, 0.0)
        mujoco.mju_cholSolve(self._force, inv_lambda, acc - self._minv_jt[:, :n] @ tau_null)
        # Joint-limit avoidance, a one-sided spring inside the margin (clip(q) - q is zero outside it).
        # Without it a joint that reaches its stop takes a degree of freedom away from the OSC, which
        # then drives the arm away from the target.
        tau_limit = g.k_limit_nm * (np.clip(self._q, self._q_soft_lo, self._q_soft_hi) - self._q)
        self._ctrl[:] = jac.T @ self._force + tau_null + tau_limit + self._bias


class SimClock(Clock):
    """Simulated time: waiting a period steps the arm's physics and controller through it."""

    def __init__(self, arm: SimArm) -> None:
        self.arm = arm

    def now_s(self) -> float:
        return float(self.arm.world.data.time)

    def wait(self, period_s: float) -> None:
        self.arm.run(period_s)
