"""A simulated operator who jogs the arm to a list of poses and presses a button at each, behind `Teleop`.

It stands in for a person with a SpaceMouse during operator-driven calibration (workspace corners, hand-eye
poses): it watches the arm (as a person does), pushes the twist towards the next waypoint, and once the
arm is there and still, presses success; after the last waypoint it presses fail (done).
"""

from __future__ import annotations

import numpy as np

from dojo.robot import geometry
from dojo.robot.interfaces import Arm, Teleop, TeleopCommand


class WaypointOperator(Teleop):
    """`waypoints`: positions (m, base frame), or (position, wxyz quaternion) pairs to turn the hand too.
    Full deflection beyond `slow_within_m` / `slow_within_rad` of the waypoint, proportional inside; it
    presses success once within `tolerance_m` / `tolerance_rad` and slower than `still_m_s`."""

    def __init__(self, arm: Arm, waypoints, slow_within_m: float = 0.05, slow_within_rad: float = 0.3,
                 tolerance_m: float = 0.002, tolerance_rad: float = 0.01, still_m_s: float = 0.003) -> None:
        self.arm = arm
        self.waypoints = [(np.asarray(w[0], float), geometry.quat_normalize(w[1])) if isinstance(w, tuple)
                          else (np.asarray(w, float), None) for w in waypoints]
        self.slow_within_m, self.slow_within_rad = slow_within_m, slow_within_rad
        self.tolerance_m, self.tolerance_rad, self.still_m_s = tolerance_m, tolerance_rad, still_m_s
        self.index = 0  # the waypoint it is driving to
        self.presses: list[str] = []

    def read(self) -> TeleopCommand:
        if self.index >= len(self.waypoints):
            self.presses.append("fail")
            return TeleopCommand(twist=np.zeros(6), gripper=1.0, fail=True)
        state = self.arm.state()
        pos, quat = self.waypoints[self.index]
        error_m = pos - state.ee_pos_m
        error_rad = (np.zeros(3) if quat is None
                     else geometry.quat_to_rotvec(geometry.quat_mul(quat, geometry.quat_conj(state.ee_quat_wxyz))))
        if (np.linalg.norm(error_m) < self.tolerance_m and np.linalg.norm(error_rad) < self.tolerance_rad
                and np.linalg.norm(state.ee_vel[:3]) < self.still_m_s):
            self.index += 1
            self.presses.append("success")
            return TeleopCommand(twist=np.zeros(6), gripper=1.0, success=True)
        twist = np.concatenate([np.clip(error_m / self.slow_within_m, -1, 1),
                                np.clip(error_rad / self.slow_within_rad, -1, 1)])
        return TeleopCommand(twist=twist, gripper=1.0)
