"""Twin devices with a real device's timing and optics: an arm whose commands arrive late, and a camera that
captures at its own frame rate, delivers each frame late, may stamp it off its true capture time, and may
see through a distorting lens. Every injected value is known, so calibration can be checked against it.

Both keep time with the physics through `SimArm.tick_hooks`: nothing happens between controller ticks
(4 ms by default), so an injected latency that is a multiple of the tick is reproduced exactly.
"""

from __future__ import annotations

import collections

import mujoco
import numpy as np

from dojo.robot.interfaces import Arm, ArmState, Camera, Frame
from dojo.sim.arm import SimArm

_EPS_S = 1e-9  # simulated time accumulates rounding; "due" means due within this


class LaggedArm(Arm):
    """A SimArm whose commands reach the controller `command_latency_s` after `command()` returns, as they
    do through a network and a real controller's input queue. State reads are not delayed."""

    def __init__(self, arm: SimArm, command_latency_s: float = 0.0) -> None:
        if not (np.isfinite(command_latency_s) and command_latency_s >= 0):
            raise ValueError(f"command_latency_s must be >= 0 seconds, got {command_latency_s!r}")
        self.arm, self.command_latency_s = arm, float(command_latency_s)
        self.n_joints, self.max_gripper_width_m, self.home_q_rad = arm.n_joints, arm.max_gripper_width_m, arm.home_q_rad
        self.world = arm.world
        self._pending: collections.deque = collections.deque()  # (due_s, pos, quat, width)
        arm.tick_hooks.append(self._deliver)

    def state(self) -> ArmState:
        return self.arm.state()

    def command(self, target_pos_m: np.ndarray, target_quat_wxyz: np.ndarray, gripper_width_m: float) -> None:
        if self.command_latency_s == 0:
            self.arm.command(target_pos_m, target_quat_wxyz, gripper_width_m)
            return
        due_s = float(self.world.data.time) + self.command_latency_s
        self._pending.append((due_s, np.array(target_pos_m, dtype=np.float64),
                              np.array(target_quat_wxyz, dtype=np.float64), float(gripper_width_m)))

    def reset_to(self, joint_q_rad: np.ndarray) -> None:
        self._pending.clear()
        self.arm.reset_to(joint_q_rad)

    def stop(self) -> None:
        self._pending.clear()  # a stop must not be followed by older commands still in flight
        self.arm.stop()

    def _deliver(self) -> None:
        now_s = float(self.world.data.time)
        while self._pending and self._pending[0][0] <= now_s + _EPS_S:
            _, pos, quat, width = self._pending.popleft()
            self.arm.command(pos, quat, width)


def distortion_maps(K: np.ndarray, dist: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of the distorted image, where to sample the ideal pinhole image (OpenCV's model:
    k1, k2, p1, p2, k3). The inverse of the lens model, found with cv2.undistortPoints."""
    import cv2

    height, width = shape
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
    ideal = cv2.undistortPointsIter(pixels, K, np.asarray(dist, dtype=np.float64), None, K, criteria)
    ideal = ideal.reshape(height, width, 2).astype(np.float32)
    return ideal[..., 0], ideal[..., 1]


class TimedCamera(Camera):
    """A camera on the twin with a frame rate, an arrival latency, a timestamp offset and lens distortion.

    A frame is captured at the first controller tick at or after each 1/fps instant (the scene's state is
    kept, and rendered only when the frame is read). It arrives `latency_s` later: `read()` returns the
    newest frame that has arrived, with `arrival_s` = capture + latency. Its `timestamp_s` is the capture
    time plus `timestamp_offset_s`: 0 for a camera with hardware capture stamps; a camera that stamps
    frames when they reach the host has an offset equal to its latency. The image is rendered through the
    lens model `dist` (k1, k2, p1, p2, k3) when given, by remapping the ideal pinhole render.
    `intrinsics` is what the camera reports (a driver's factory values): the ideal pinhole K unless
    `reported_K` says otherwise; `true_K` is always the ideal one.
    """

    def __init__(self, arm: SimArm, name: str, shape: tuple[int, int] = (480, 640), fps: float = 30.0,
                 latency_s: float = 0.0, timestamp_offset_s: float = 0.0, dist=None,
                 reported_K: np.ndarray | None = None, shadows: bool = False) -> None:
        height, width = (int(v) for v in shape)
        if height <= 0 or width <= 0:
            raise ValueError(f"camera shape must be positive (height, width), got {shape!r}")
        if not (np.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive frame rate, got {fps!r}")
        for key, value in (("latency_s", latency_s), ("timestamp_offset_s", timestamp_offset_s)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be >= 0 seconds, got {value!r}")
        world = arm.world
        try:
            self._camera_id = world.model.camera(name).id
        except KeyError:
            names = [world.model.camera(i).name for i in range(world.model.ncam)]
            raise ValueError(f"no camera named {name!r} in the twin; expected one of {names}") from None
        self.arm, self.world, self.name, self.shape = arm, world, name, (height, width)
        self.period_s, self.latency_s, self.timestamp_offset_s = 1.0 / fps, float(latency_s), float(timestamp_offset_s)
        fovy_rad = np.deg2rad(world.model.cam_fovy[self._camera_id])
        focal_px = 0.5 * height / np.tan(fovy_rad / 2)
        # OpenGL's frustum is centred on the image, whose centre in OpenCV's pixel coordinates (pixel
        # centres at integers) is ((w - 1) / 2, (h - 1) / 2).
        self.true_K = np.array([[focal_px, 0.0, (width - 1) / 2], [0.0, focal_px, (height - 1) / 2], [0, 0, 1.0]])
        self.intrinsics = self.true_K.copy() if reported_K is None else np.asarray(reported_K, dtype=np.float64)
        self.dist = None if dist is None else np.asarray(dist, dtype=np.float64)
        self._maps = None if self.dist is None or not np.any(self.dist) else distortion_maps(self.true_K, self.dist,
                                                                                              self.shape)
        self._renderer = mujoco.Renderer(world.model, height, width)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(shadows)
        self._scratch = mujoco.MjData(world.model)  # past states are rendered here, not in the live data
        self._captures: collections.deque = collections.deque()  # (capture_s, qpos, mocap_pos, mocap_quat)
        self._next_capture_s: float | None = None
        self._last: tuple[float, Frame] | None = None
        self._capture()  # a first frame, so that a read before the first period has something
        arm.tick_hooks.append(self._tick)

    def _capture(self) -> None:
        d = self.world.data
        now_s = float(d.time)
        self._captures.append((now_s, d.qpos.copy(), d.mocap_pos.copy(), d.mocap_quat.copy()))
        self._next_capture_s = now_s + self.period_s
        # Keep what may still be read: every frame not yet arrived, plus the newest arrived one.
        while len(self._captures) > 1 and self._captures[1][0] + self.latency_s <= now_s + _EPS_S:
            self._captures.popleft()

    def _tick(self) -> None:
        now_s = float(self.world.data.time)
        if now_s + _EPS_S >= self._next_capture_s:
            self._capture()
        elif now_s + self.period_s < self._next_capture_s:  # time went back (a fresh MjData): start again
            self._captures.clear()
            self._capture()

    def read(self) -> Frame:
        now_s = float(self.world.data.time)
        arrived = [c for c in self._captures if c[0] + self.latency_s <= now_s + _EPS_S]
        # Before the first frame has arrived (the first latency_s of a run) the first capture is returned early.
        capture = arrived[-1] if arrived else self._captures[0]
        if self._last is not None and self._last[0] == capture[0]:
            return self._last[1]
        capture_s, qpos, mocap_pos, mocap_quat = capture
        scratch, m = self._scratch, self.world.model
        scratch.qpos[:], scratch.mocap_pos[:], scratch.mocap_quat[:] = qpos, mocap_pos, mocap_quat
        scratch.time = capture_s
        mujoco.mj_forward(m, scratch)
        self._renderer.update_scene(scratch, camera=self._camera_id)
        rgb = self._renderer.render()
        if self._maps is not None:
            import cv2

            rgb = cv2.remap(rgb, self._maps[0], self._maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        frame = Frame(rgb=rgb, timestamp_s=capture_s + self.timestamp_offset_s, intrinsics=self.intrinsics.copy(),
                      arrival_s=capture_s + self.latency_s)
        self._last = (capture_s, frame)
        return frame

    def close(self) -> None:
        self.arm.tick_hooks[:] = [h for h in self.arm.tick_hooks if h != self._tick]
        self._renderer.close()
