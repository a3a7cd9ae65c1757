"""Latencies between command, motion and image, measured through the device interfaces:

- command-to-motion: step commands, the arm's reported response, and a fitted dead time (a second-order
  response that starts after the delay);
- capture-to-arrival, per camera: each frame's capture stamp against when it reached the host;
- motion-to-image, per camera: the arm moves the board (or the camera) along a smooth path, and the board's
  motion seen in the images is matched to the arm's recorded states at every candidate delay; the delay that
  explains the images best is the one to pair frames with states (`pairing.pair_frames_with_states`).
  UMI calibrates its latencies the same way, by aligning what the camera sees with what the robot reports.

All times are on the arm's clock, which the cameras stamp their frames with.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dojo.calibration.board import BoardSpec, CalibrationError, board_pose, detect_board
from dojo.calibration.motion import MotionLimits, check_in_box, wait_still
from dojo.calibration.frames import mat_to_rotvec
from dojo.robot.pairing import interpolate_rows
from dojo.robot import geometry
from dojo.robot.interfaces import Arm, Camera, Clock


@dataclasses.dataclass(frozen=True)
class StepFit:
    label: str
    delay_s: float
    rate_1_s: float  # the fitted response's rate: y = A (1 - (1 + r t) exp(-r t)) after the delay
    rms_m: float  # fit residual


@dataclasses.dataclass(frozen=True)
class CommandLatency:
    delay_s: float  # median over the steps
    steps: tuple[StepFit, ...]

    def to_dict(self) -> dict:
        return {"command_to_motion_s": round(self.delay_s, 5),
                "steps": [{k: round(v, 6) if isinstance(v, float) else v for k, v in dataclasses.asdict(s).items()}
                          for s in self.steps]}


def _response(tau: np.ndarray, rate: float) -> np.ndarray:
    tau = np.maximum(tau, 0.0)
    return 1.0 - (1.0 + rate * tau) * np.exp(-rate * tau)


def fit_step_delay(t_s: np.ndarray, y: np.ndarray, max_delay_s: float = 0.3,
                   rise_fraction: float = 0.6) -> tuple[float, float, float]:
    """(delay, rate, rms) of y(t) = A * response(t - delay; rate) for a step commanded at t = 0 from y = 0.

    A is where the response settles (the median of its last tenth). Only the rise up to `rise_fraction` of A
    is fitted: the delay shows there, while the tail's shape depends on the controller (integrators,
    nullspace motion) more than a second-order model captures, and would pull the delay off. A coarse grid
    over delay and rate, then a finer one around the best: cheap, and no local minimum to fall into.
    """
    t_s, y = np.asarray(t_s, dtype=np.float64), np.asarray(y, dtype=np.float64)
    amp = float(np.median(y[-max(3, len(y) // 10):]))
    if amp <= 0:
        raise CalibrationError(f"the arm did not follow a step command (it settled {amp * 1e3:.2f} mm along the "
                               "step): is the controller running and taking commands?")
    end = int(np.argmax(y > rise_fraction * amp)) + 1
    t_s, y = t_s[:end], y[:end]

    def best(delays, rates):
        result = (np.inf, 0.0, 0.0)
        for d in delays:
            for r in rates:
                sse = float(np.sum((y - amp * _response(t_s - d, r)) ** 2))
                if sse < result[0]:
                    result = (sse, d, r)
        return result

    _, d, r = best(np.arange(0.0, max_delay_s, 0.002), np.geomspace(3.0, 300.0, 40))
    sse, d, r = best(np.arange(max(0.0, d - 0.004), d + 0.004, 0.0001), r * np.geomspace(0.9, 1.1, 21))
    return float(d), float(r), float(np.sqrt(sse / len(y)))


def measure_command_latency(arm: Arm, clock: Clock, *, box_min_m, box_max_m, step_m: float = 0.02,
                            axes: str = "xyz", hold_s: float = 0.6, poll_s: float = 0.002,
                            limits: MotionLimits = MotionLimits()) -> CommandLatency:
    """Step the end-effector target by +-`step_m` along each axis and fit the delay before it moves."""
    steps = []
    state = wait_still(arm, clock, limits)
    home = state.ee_pos_m.copy()
    for axis_name in axes:
        axis = "xyz".index(axis_name)
        for sign in (1.0, -1.0):
            state = wait_still(arm, clock, limits)
            target = state.ee_pos_m.copy()
            target[axis] = home[axis] + sign * step_m / 2  # steps alternate across the start position
            T = np.eye(4)
            T[:3, 3] = target
            check_in_box(T, box_min_m, box_max_m, f"latency step along {axis_name}")
            y0 = state.ee_pos_m[axis]
            t0 = clock.now_s()
            arm.command(target, state.ee_quat_wxyz, state.gripper_width_m)
            times, values = [], []
            while clock.now_s() - t0 < hold_s:
                clock.wait(poll_s)
                s = arm.state()
                times.append(s.timestamp_s - t0)
                values.append(s.ee_pos_m[axis] - y0)
            delay, rate, rms = fit_step_delay(np.array(times), np.array(values) * np.sign(target[axis] - y0))
            steps.append(StepFit(f"{axis_name}{'+' if sign > 0 else '-'}", delay, rate, rms))
    return CommandLatency(delay_s=float(np.median([s.delay_s for s in steps])), steps=tuple(steps))


@dataclasses.dataclass(frozen=True)
class CameraLatency:
    camera: str
    capture_to_arrival_s: float  # median
    jitter_s: float  # standard deviation
    frames: int
    fps: float

    def to_dict(self) -> dict:
        return {"capture_to_arrival_s": round(self.capture_to_arrival_s, 5), "jitter_s": round(self.jitter_s, 5),
                "frames": self.frames, "fps": round(self.fps, 2)}


def measure_capture_to_arrival(camera: Camera, clock: Clock, frames: int = 60, poll_s: float = 0.002,
                               timeout_s: float = 10.0) -> CameraLatency:
    """Each new frame's arrival time (the driver's `arrival_s`, else the clock when `read()` returned it)
    minus its capture stamp."""
    delays, stamps = [], []
    last = None
    start_s = clock.now_s()
    while len(delays) < frames:
        if clock.now_s() - start_s > timeout_s:
            raise CalibrationError(f"camera {camera.name!r} gave {len(delays)} new frames in {timeout_s} s, "
                                   f"{frames} were needed: is it streaming?")
        frame = camera.read()
        if frame.timestamp_s != last:
            last = frame.timestamp_s
            arrival = getattr(frame, "arrival_s", None)
            arrival = clock.now_s() if arrival is None else arrival
            delays.append(arrival - frame.timestamp_s)
            stamps.append(frame.timestamp_s)
        clock.wait(poll_s)
    fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if stamps[-1] > stamps[0] else 0.0
    return CameraLatency(camera=camera.name, capture_to_arrival_s=float(np.median(delays)),
                         jitter_s=float(np.std(delays)), frames=len(delays), fps=float(fps))


@dataclasses.dataclass(frozen=True)
class MotionToImage:
    camera: str
    latency_s: float  # frame stamp minus the arm-clock time of the instant it shows
    residual_mm: float  # RMS misfit of the board's seen motion at that delay
    frames: int
    curve: tuple[tuple[float, float], ...]  # (delay_s, residual_mm) over the searched delays

    def to_dict(self) -> dict:
        return {"motion_to_image_s": round(self.latency_s, 5), "motion_residual_mm": round(self.residual_mm, 4),
                "motion_frames": self.frames}


def _misfit(board_xyz: np.ndarray, arm_pose: np.ndarray) -> float:
    """RMS residual of the best affine map from arm poses (n, 6) to board positions (n, 3)."""
    A = np.hstack([arm_pose, np.ones((len(arm_pose), 1))])
    coef, *_ = np.linalg.lstsq(A, board_xyz, rcond=None)
    return float(np.sqrt(np.mean(np.sum((A @ coef - board_xyz) ** 2, axis=1))))


def align_motion(frame_times_s: np.ndarray, board_xyz: np.ndarray, state_times_s: np.ndarray, ee_pose: np.ndarray,
                 max_latency_s: float = 0.25, step_s: float = 0.001) -> tuple[float, float, list[tuple[float, float]]]:
    """The delay at which the arm's poses best explain the board's positions seen in the frames.

    `ee_pose` rows are the end-effector's position and its rotation vector from a reference orientation.
    For small motions the board's position in the camera frame is an affine function of these (for either
    mount), whatever the hand-eye transform: so no calibration is needed here. The controller holds the
    orientation, but not perfectly, and a 0.3 degree wobble of a wrist camera moves the board by 2 mm: hence
    the rotation terms. Returns (delay, RMS misfit, the misfit curve); the minimum is refined by a parabola.
    """
    delays = np.arange(-0.05, max_latency_s + step_s / 2, step_s)
    lo, hi = state_times_s[0], state_times_s[-1]
    keep = (frame_times_s - max_latency_s >= lo) & (frame_times_s + 0.05 <= hi)
    if keep.sum() < 20:
        raise CalibrationError(f"only {int(keep.sum())} frames fall inside the recorded motion; record longer")
    ft, bx = frame_times_s[keep], board_xyz[keep]
    misfits = np.array([_misfit(bx, interpolate_rows(state_times_s, ee_pose, ft - d)) for d in delays])
    i = int(np.argmin(misfits))
    delay = float(delays[i])
    if 0 < i < len(delays) - 1:
        a, b, c = misfits[i - 1], misfits[i], misfits[i + 1]
        denom = a - 2 * b + c
        if denom > 0:
            delay += 0.5 * (a - c) / denom * step_s
    return delay, float(misfits[i]), [(float(d), float(m) * 1e3) for d, m in zip(delays, misfits)]


def measure_motion_to_image(arm: Arm, clock: Clock, camera: Camera, board: BoardSpec, K: np.ndarray,
                            dist: np.ndarray | None = None, *, box_min_m, box_max_m, amplitude_m: float = 0.03,
                            duration_s: float = 5.0, frequencies_hz=(0.45, 0.7, 0.95), command_period_s: float = 0.004,
                            max_latency_s: float = 0.25, limits: MotionLimits = MotionLimits()) -> MotionToImage:
    """Move the end-effector along a smooth 3-D path around where it is (the board must be in view there),
    record every state and every new frame, and find the delay that aligns them (`align_motion`)."""
    state = wait_still(arm, clock, limits)
    center, quat, width = state.ee_pos_m.copy(), state.ee_quat_wxyz, state.gripper_width_m
    for corner in (-1.0, 1.0):
        T = np.eye(4)
        T[:3, 3] = center + corner * amplitude_m
        check_in_box(T, box_min_m, box_max_m, "the latency path")
    first = camera.read()
    if detect_board(first.rgb, board) is None:
        raise CalibrationError(f"camera {camera.name!r} does not see the board: put the arm where the whole board "
                               "is in view before measuring the motion-to-image latency")
    t0 = clock.now_s()
    freqs = 2 * np.pi * np.asarray(frequencies_hz)
    state_times, ee_pose, frame_times, board_xyz = [], [], [], []
    R_ref = geometry.quat_to_mat(quat)
    last_stamp = None
    while True:
        t = clock.now_s() - t0
        if t > duration_s:
            break
        ramp = min(1.0, t / 0.5, (duration_s - t) / 0.5)  # start and end at rest
        arm.command(center + ramp * amplitude_m * np.sin(freqs * t), quat, width)
        clock.wait(command_period_s)
        s = arm.state()
        state_times.append(s.timestamp_s)
        ee_pose.append(np.concatenate([s.ee_pos_m, mat_to_rotvec(geometry.quat_to_mat(s.ee_quat_wxyz) @ R_ref.T)]))
        frame = camera.read()
        if frame.timestamp_s != last_stamp:
            last_stamp = frame.timestamp_s
            view = detect_board(frame.rgb, board)
            if view is not None and view.num_corners >= 8:
                T_cam_board, _ = board_pose(view, K, dist)
                frame_times.append(frame.timestamp_s)
                board_xyz.append(T_cam_board[:3, :3] @ board.center_m() + T_cam_board[:3, 3])
    arm.command(center, quat, width)
    wait_still(arm, clock, limits)
    if len(frame_times) < 20:
        raise CalibrationError(f"the board was seen in only {len(frame_times)} frames while the arm moved: keep it "
                               "in view (a smaller amplitude_m), or check the lighting")
    delay, misfit, curve = align_motion(np.array(frame_times), np.array(board_xyz), np.array(state_times),
                                        np.array(ee_pose), max_latency_s)
    return MotionToImage(camera=camera.name, latency_s=delay, residual_mm=misfit * 1e3, frames=len(frame_times),
                         curve=tuple(curve))
