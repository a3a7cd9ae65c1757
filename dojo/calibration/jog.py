"""Operator-driven calibration: the operator jogs the arm with a teleop device and presses a button at each
pose to use (a hand-eye pose, a workspace corner).

Buttons: success takes the pose, discard drops the last one taken, fail ends, e-stop stops the arm and
aborts. The arm's target never leaves the workspace box.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from dojo.calibration.board import CalibrationError
from dojo.calibration.frames import T_base_ee, mat_to_quat, rotvec_to_mat
from dojo.robot.interfaces import Arm, Clock, Teleop


@dataclasses.dataclass(frozen=True)
class JogSettings:
    speed_m_s: float = 0.08  # at full deflection of the device
    speed_rad_s: float = 0.4
    period_s: float = 0.02
    leash_m: float = 0.02  # the target runs at most this far ahead of the arm
    timeout_s: float = 900.0  # an operator who walked away: stop
    max_takes: int | None = None  # end after this many poses (None: when fail is pressed)


def jog_and_take(arm: Arm, clock: Clock, teleop: Teleop, *, take: Callable[[int], None], drop: Callable[[], object],
                 box_min_m, box_max_m, settings: JogSettings = JogSettings()) -> int:
    """Jog the arm from `teleop` until fail is pressed (or `settings.max_takes` poses); at each success press
    the arm holds and `take(i)` runs. Returns how many poses were taken (and not dropped)."""
    lo, hi = np.asarray(box_min_m, float), np.asarray(box_max_m, float)
    state = arm.state()
    T_target = T_base_ee(state)
    width = state.gripper_width_m
    taken = 0
    start_s = clock.now_s()
    while settings.max_takes is None or taken < settings.max_takes:
        if clock.now_s() - start_s > settings.timeout_s:
            raise CalibrationError(f"no end of the poses within {settings.timeout_s:.0f} s: press fail on the teleop "
                                   "device when the poses are done")
        cmd = teleop.read()
        if cmd.estop:
            arm.stop()
            raise CalibrationError("e-stop pressed during calibration: the arm holds where it is; nothing was saved")
        if cmd.fail:
            break
        if cmd.success:
            arm.stop()
            take(taken)
            taken += 1
            T_target = T_base_ee(arm.state())
            continue
        if cmd.discard and taken > 0:
            drop()
            taken -= 1
        state = arm.state()
        R_now = T_base_ee(state)[:3, :3]
        twist = np.clip(np.asarray(cmd.twist, dtype=np.float64), -1.0, 1.0)
        linear, angular = twist[:3], twist[3:]
        if cmd.frame == "ee":
            linear, angular = R_now @ linear, R_now @ angular
        pos = T_target[:3, 3] + linear * settings.speed_m_s * settings.period_s
        pos = np.clip(np.clip(pos, state.ee_pos_m - settings.leash_m, state.ee_pos_m + settings.leash_m), lo, hi)
        T_target[:3, 3] = pos
        T_target[:3, :3] = rotvec_to_mat(angular * settings.speed_rad_s * settings.period_s) @ T_target[:3, :3]
        arm.command(pos, mat_to_quat(T_target[:3, :3]), width)
        clock.wait(settings.period_s)
    return taken
