"""Intel RealSense colour (+ aligned depth) camera through pyrealsense2, behind `Camera`."""

from __future__ import annotations

import numpy as np

from dojo.robot.drivers import require
from dojo.robot.interfaces import Camera, Frame


class RealSenseCamera(Camera):
    def __init__(self, name: str, serial: str, height: int = 480, width: int = 640, fps: int = 30,
                 depth: bool = False, timeout_ms: int = 2000) -> None:
        rs = require("pyrealsense2", "realsense")
        self.name, self.shape, self._timeout_ms, self._rs = name, (height, width), timeout_ms, rs
        config = rs.config()
        config.enable_device(serial)  # serials come from the config, never from code
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        if depth:
            config.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        self._pipeline = rs.pipeline()
        try:
            profile = self._pipeline.start(config)
        except RuntimeError as err:
            raise RuntimeError(f"RealSense camera {name!r} (serial {serial!r}) did not start: {err}") from err
        self._align = rs.align(rs.stream.color) if depth else None
        self._depth_scale_m = profile.get_device().first_depth_sensor().get_depth_scale() if depth else 0.0
        color = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        self.intrinsics = np.array([[color.fx, 0, color.ppx], [0, color.fy, color.ppy], [0, 0, 1]])

    def read(self) -> Frame:
        try:
            frames = self._pipeline.wait_for_frames(self._timeout_ms)
        except RuntimeError as err:
            raise TimeoutError(f"RealSense camera {self.name!r} gave no frame in {self._timeout_ms} ms") from err
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        depth_m = None
        if self._align is not None:
            depth_m = np.asanyarray(frames.get_depth_frame().get_data()).astype(np.float32) * self._depth_scale_m
        return Frame(rgb=np.asanyarray(color.get_data()).copy(), timestamp_s=color.get_timestamp() / 1e3,
                     intrinsics=self.intrinsics, depth_m=depth_m)

    def close(self) -> None:
        self._pipeline.stop()
