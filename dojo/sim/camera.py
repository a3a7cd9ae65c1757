"""The twin's cameras: offscreen MuJoCo rendering of a named model camera, behind the `Camera` API."""

from __future__ import annotations

import mujoco
import numpy as np

from dojo.robot.interfaces import Camera, Frame
from dojo.sim.world import SimWorld


class SimCamera(Camera):
    """Renders the MJCF camera `name` ("front" or "wrist" in the twin) at `shape` = (height, width) pixels."""

    def __init__(self, world: SimWorld, name: str, shape: tuple[int, int] = (128, 128),
                 shadows: bool = False) -> None:
        height, width = (int(v) for v in shape)
        if height <= 0 or width <= 0:
            raise ValueError(f"camera shape must be positive (height, width), got {shape!r}")
        try:
            self._camera_id = world.model.camera(name).id
        except KeyError:
            names = [world.model.camera(i).name for i in range(world.model.ncam)]
            raise ValueError(f"no camera named {name!r} in the twin; expected one of {names}") from None
        self.world, self.name, self.shape = world, name, (height, width)
        self._renderer = mujoco.Renderer(world.model, height, width)
        # Shadow maps take about 3/4 of a frame's time in software (EGL on CPU) rendering; off by default.
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(shadows)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)

    @property
    def intrinsics(self) -> np.ndarray:
        """Pinhole K matrix in pixels from the camera's vertical field of view, in OpenCV's convention (pixel
        centres at integers: the image centre is at ((W - 1) / 2, (H - 1) / 2))."""
        height, width = self.shape
        fovy_rad = np.deg2rad(self.world.model.cam_fovy[self._camera_id])
        focal_px = 0.5 * height / np.tan(fovy_rad / 2)
        return np.array([[focal_px, 0.0, (width - 1) / 2], [0.0, focal_px, (height - 1) / 2], [0.0, 0.0, 1.0]])

    def read(self) -> Frame:
        self._renderer.update_scene(self.world.data, camera=self._camera_id)
        self._renderer.render(out=self._rgb)
        return Frame(rgb=self._rgb.copy(), timestamp_s=float(self.world.data.time), intrinsics=self.intrinsics)

    def close(self) -> None:
        self._renderer.close()
