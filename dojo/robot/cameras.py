"""What every camera gets from its station config, whatever its driver: the crop and resize the policy sees
(with the intrinsics to match), and a stop when it delivers no new frame for `stale_after_s`."""

from __future__ import annotations

import numpy as np

from dojo.robot.interfaces import Camera, Clock, DeviceError, Frame


def resize_bilinear(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """HxWxC uint8 to shape=(h, w) by bilinear interpolation at pixel centres (numpy only: the robot
    machine needs no image library for this)."""
    h, w = image.shape[:2]
    out_h, out_w = shape
    if (h, w) == (out_h, out_w):
        return image
    y = np.clip((np.arange(out_h) + 0.5) * h / out_h - 0.5, 0, h - 1)
    x = np.clip((np.arange(out_w) + 0.5) * w / out_w - 0.5, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (y - y0)[:, None, None], (x - x0)[None, :, None]
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return np.clip(top * (1 - wy) + bottom * wy + 0.5, 0, 255).astype(np.uint8)


class CameraView(Camera):
    """A driver's camera as the station config shapes it. `crop` is (top, left, height, width) of the
    delivered image and `resize` the (height, width) after it; K follows both. A frame whose capture time
    has not moved for `stale_after_s` on `clock` (the camera froze, or its cable came loose) raises
    DeviceError."""

    def __init__(self, camera: Camera, clock: Clock, crop=None, resize=None, stale_after_s: float = 1.0) -> None:
        self.camera, self.clock, self.name = camera, clock, camera.name
        self.crop, self.resize, self.stale_after_s = crop, resize, stale_after_s
        self.shape = tuple(resize) if resize is not None else (tuple(crop[2:]) if crop is not None else camera.shape)
        self._last_stamp: float | None = None
        self._new_since_s: float | None = None

    def read(self) -> Frame:
        frame = self.camera.read()
        now = self.clock.now_s()
        if frame.timestamp_s != self._last_stamp:
            self._last_stamp, self._new_since_s = frame.timestamp_s, now
        elif now - self._new_since_s > self.stale_after_s:
            raise DeviceError(f"camera {self.name!r} delivered no new frame for {now - self._new_since_s:.2f} s "
                              f"(stale_after_s={self.stale_after_s}): check its cable, power and USB bandwidth")
        rgb, depth, k = frame.rgb, frame.depth_m, frame.intrinsics
        if self.crop is not None:
            top, left, h, w = self.crop
            rgb = rgb[top:top + h, left:left + w]
            depth = None if depth is None else depth[top:top + h, left:left + w]
            k = None if k is None else k - np.array([[0, 0, left], [0, 0, top], [0, 0, 0]])
        if self.resize is not None:
            sy, sx = self.resize[0] / rgb.shape[0], self.resize[1] / rgb.shape[1]
            rgb = resize_bilinear(rgb, self.resize)
            if depth is not None:  # nearest: depth must not blend across edges
                rows = np.minimum((np.arange(self.resize[0]) / sy).astype(int), depth.shape[0] - 1)
                cols = np.minimum((np.arange(self.resize[1]) / sx).astype(int), depth.shape[1] - 1)
                depth = depth[rows][:, cols]
            if k is not None:  # pixel centres map as x' = (x + 0.5) s - 0.5
                k = np.diag([sx, sy, 1.0]) @ k + np.array([[0, 0, 0.5 * (sx - 1)], [0, 0, 0.5 * (sy - 1)], [0, 0, 0]])
        return Frame(rgb=np.ascontiguousarray(rgb), timestamp_s=frame.timestamp_s, intrinsics=k, depth_m=depth,
                     arrival_s=frame.arrival_s)

    def close(self) -> None:
        self.camera.close()
