"""Moving the arm for calibration and taking a still view: straight-line moves at a bounded speed, waiting
until the arm is still, and a camera frame captured after that.

Everything goes through `Arm`, `Camera` and `Clock`, so the same code drives a robot (wall clock) and
the twin (simulated time). Targets are checked against the workspace box before anything moves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dojo.calibration.board import BoardSpec, BoardView, CalibrationError, detect_board
from dojo.calibration.frames import T_base_ee, mat_to_quat, mat_to_rotvec, rotvec_to_mat
from dojo.robot.interfaces import Arm, ArmState, Camera, Clock, Frame


@dataclasses.dataclass(frozen=True)
class MotionLimits:
    """How calibration moves the arm: speeds, the command period, and when it counts as still."""

    speed_m_s: float = 0.10
    speed_rad_s: float = 0.5
    command_period_s: float = 0.02
    still_speed_m_s: float = 0.002  # slower than this (and still_speed_rad_s) counts as still
    still_speed_rad_s: float = 0.01
    still_for_s: float = 0.25  # ... for this long
    settle_timeout_s: float = 4.0
    frame_timeout_s: float = 2.0  # a camera that gives no new frame for this long is broken


def check_in_box(T_base_ee_target: np.ndarray, box_min_m, box_max_m, what: str = "target") -> None:
    pos = T_base_ee_target[:3, 3]
    lo, hi = np.asarray(box_min_m, float), np.asarray(box_max_m, float)
    if np.any(pos < lo - 1e-9) or np.any(pos > hi + 1e-9):
        raise CalibrationError(f"{what} position {np.round(pos, 4).tolist()} m is outside the workspace box "
                               f"{np.round(lo, 4).tolist()}..{np.round(hi, 4).tolist()}; nothing was moved")


def move_to(arm: Arm, clock: Clock, T_target: np.ndarray, limits: MotionLimits = MotionLimits(),
            gripper_width_m: float | None = None) -> ArmState:
    """Move the end-effector to T_target along a straight line (slerp for the rotation), then wait until
    the arm is still; returns the state it settled in."""
    start = arm.state()
    T_start = T_base_ee(start)
    width = start.gripper_width_m if gripper_width_m is None else gripper_width_m
    delta_pos = T_target[:3, 3] - T_start[:3, 3]
    delta_rot = mat_to_rotvec(T_target[:3, :3] @ T_start[:3, :3].T)
    duration_s = max(np.linalg.norm(delta_pos) / limits.speed_m_s, np.linalg.norm(delta_rot) / limits.speed_rad_s)
    steps = max(1, int(np.ceil(duration_s / limits.command_period_s)))
    for k in range(1, steps + 1):
        frac = k / steps
        pos = T_start[:3, 3] + frac * delta_pos
        arm.command(pos, mat_to_quat(rotvec_to_mat(frac * delta_rot) @ T_start[:3, :3]), width)
        clock.wait(limits.command_period_s)
    return wait_still(arm, clock, limits)


def wait_still(arm: Arm, clock: Clock, limits: MotionLimits = MotionLimits()) -> ArmState:
    """Wait until the arm has been still for `limits.still_for_s`; raises if it does not settle in time."""
    start_s = clock.now_s()
    still_since_s = None
    while True:
        state = arm.state()
        now_s = clock.now_s()
        still = (np.linalg.norm(state.ee_vel[:3]) < limits.still_speed_m_s
                 and np.linalg.norm(state.ee_vel[3:]) < limits.still_speed_rad_s)
        still_since_s = (still_since_s if still_since_s is not None else now_s) if still else None
        if still_since_s is not None and now_s - still_since_s >= limits.still_for_s:
            return state
        if now_s - start_s > limits.settle_timeout_s:
            raise CalibrationError(f"the arm did not come to rest within {limits.settle_timeout_s} s (speed "
                                   f"{np.linalg.norm(state.ee_vel[:3]):.4f} m/s); check the controller, or raise "
                                   "settle_timeout_s")
        clock.wait(limits.command_period_s)


def fresh_frame(camera: Camera, clock: Clock, after_s: float, limits: MotionLimits = MotionLimits()) -> Frame:
    """The first frame stamped at or after `after_s` (on the camera's clock, which is the arm's)."""
    start_s = clock.now_s()
    while True:
        frame = camera.read()
        if frame.timestamp_s >= after_s:
            return frame
        if clock.now_s() - start_s > limits.frame_timeout_s:
            raise CalibrationError(f"camera {camera.name!r} gave no frame stamped after {after_s:.3f} s within "
                                   f"{limits.frame_timeout_s} s (newest: {frame.timestamp_s:.3f} s); is it running, "
                                   "and does it stamp frames on the arm's clock?")
        clock.wait(0.004)


@dataclasses.dataclass(frozen=True)
class Capture:
    """A still view of the board with the arm's pose at that time."""

    T_base_ee: np.ndarray
    view: BoardView | None  # None: the board was not seen
    label: str = ""


def capture_still(arm: Arm, clock: Clock, camera: Camera, board: BoardSpec, limits: MotionLimits = MotionLimits(),
                  label: str = "", min_corners: int = 6) -> Capture:
    """Wait until the arm is still, then detect the board in a frame captured after that."""
    state = wait_still(arm, clock, limits)
    frame = fresh_frame(camera, clock, clock.now_s(), limits)
    after = arm.state()
    moved_m = float(np.linalg.norm(after.ee_pos_m - state.ee_pos_m))
    if moved_m > 5e-4:
        raise CalibrationError(f"the arm moved {moved_m * 1e3:.1f} mm while a calibration frame was taken; "
                               "something pushed it, or the controller does not hold still")
    view = detect_board(frame.rgb, board, min_corners=min_corners, timestamp_s=frame.timestamp_s)
    return Capture(T_base_ee=T_base_ee(after), view=view, label=label)
