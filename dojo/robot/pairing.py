"""Pairing camera frames with arm states by time: the state the arm was in when a frame was captured.

A frame stamped `t` shows the world as it was at `t - motion_to_image_s` on the arm's clock (the latency
`dojo calibrate latency` measures). The observation pairs it with the arm state at that instant,
interpolated between the two recorded states around it. Pure numpy: the robot machine runs it every step.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dojo.robot import geometry
from dojo.robot.interfaces import ArmState


def interpolate_rows(times_s: np.ndarray, rows: np.ndarray, query_s: np.ndarray, max_gap_s: float = 0.05) -> np.ndarray:
    """Rows linearly interpolated at `query_s` from samples at increasing `times_s`; a query up to `max_gap_s`
    outside the samples takes the nearest one, one further out raises ValueError."""
    times_s, rows, query_s = (np.asarray(times_s, dtype=np.float64), np.asarray(rows, dtype=np.float64),
                              np.atleast_1d(np.asarray(query_s, dtype=np.float64)))
    if times_s.ndim != 1 or len(times_s) == 0 or len(rows) != len(times_s):
        raise ValueError(f"need one row per timestamp and at least one, got {len(times_s)} times and {len(rows)} rows")
    if np.any(np.diff(times_s) < 0):
        raise ValueError("state timestamps must not decrease")
    outside = (query_s < times_s[0] - max_gap_s) | (query_s > times_s[-1] + max_gap_s)
    if np.any(outside):
        bad = float(query_s[np.argmax(outside)])
        raise ValueError(f"no arm state near time {bad:.4f} s: the history spans {times_s[0]:.4f}..{times_s[-1]:.4f} s "
                         f"(max_gap_s={max_gap_s}); keep a longer state history, or check the latency and clocks")
    flat = rows.reshape(len(rows), -1)
    out = np.stack([np.interp(query_s, times_s, flat[:, k]) for k in range(flat.shape[1])], axis=1)
    return out.reshape((len(query_s),) + rows.shape[1:])


def state_at(history: list[ArmState], time_s: float, max_gap_s: float = 0.05) -> ArmState:
    """The arm state at `time_s`, interpolated from a history of timestamped states (oldest first).

    Positions, velocities, joints and the gripper are interpolated linearly; the orientation along the
    shorter arc (normalised linear blend of the two quaternions, exact enough between states a few
    milliseconds apart).
    """
    if not history:
        raise ValueError("no arm states to pair with: the state history is empty")
    times = np.array([s.timestamp_s for s in history])
    quats = np.array([geometry.quat_normalize(s.ee_quat_wxyz) for s in history])
    # One hemisphere along the history, so neighbouring quaternions blend along the short way.
    for i in range(1, len(quats)):
        if quats[i] @ quats[i - 1] < 0:
            quats[i] = -quats[i]
    fields = {
        "joint_q_rad": np.array([s.joint_q_rad for s in history]),
        "joint_dq_rad_s": np.array([s.joint_dq_rad_s for s in history]),
        "ee_pos_m": np.array([s.ee_pos_m for s in history]),
        "ee_quat_wxyz": quats,
        "ee_vel": np.array([s.ee_vel for s in history]),
        "gripper_width_m": np.array([s.gripper_width_m for s in history]),
    }
    values = {k: interpolate_rows(times, v, [time_s], max_gap_s)[0] for k, v in fields.items()}
    values["ee_quat_wxyz"] = geometry.quat_normalize(values["ee_quat_wxyz"])
    values["gripper_width_m"] = float(values["gripper_width_m"])
    wrench = None
    if all(s.wrench is not None for s in history):
        wrench = interpolate_rows(times, np.array([s.wrench for s in history]), [time_s], max_gap_s)[0]
    return dataclasses.replace(history[0], **values, wrench=wrench, timestamp_s=float(time_s))


def pair_frames_with_states(frame_times_s, motion_to_image_s: float, history: list[ArmState],
                            max_gap_s: float = 0.05) -> list[ArmState]:
    """For each frame timestamp, the arm state at the instant the frame shows: `t - motion_to_image_s`."""
    return [state_at(history, float(t) - motion_to_image_s, max_gap_s) for t in np.atleast_1d(frame_times_s)]
