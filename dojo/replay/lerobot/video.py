"""Camera frames to and from LeRobot's mp4 files with PyAV: many episodes one after another in each file,
frame k of a file at k / fps seconds, and each episode's [from_timestamp, to_timestamp) in meta/episodes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dojo.replay.lerobot.layout import TOLERANCE_S, VIDEO_PATH, chunk_file

# SVT-AV1 prints a dozen info lines per encoder on stderr; keep its warnings and errors only.
os.environ.setdefault("SVT_LOG", "1")


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """The encoder, with LeRobot's defaults for cameras (lerobot/configs/video.py, RGBEncoderConfig): AV1 by
    SVT-AV1 at crf 30, a keyframe every 2 frames (cheap random access for training), 4:2:0 chroma."""

    codec: str = "libsvtav1"
    crf: int = 30
    gop: int = 2
    preset: int = 12
    pix_fmt: str = "yuv420p"

    def info(self, height: int, width: int, fps: int) -> dict:
        """The `info` block of a video feature in meta/info.json, as LeRobot writes it."""
        return {"video.height": height, "video.width": width, "video.codec": "av1" if "av1" in self.codec
                else self.codec, "video.pix_fmt": self.pix_fmt, "video.fps": fps, "video.channels": 3,
                "has_audio": False, "video.g": self.gop, "video.crf": self.crf, "video.preset": self.preset,
                "video.fast_decode": 0, "video.video_backend": "pyav", "video.extra_options": {},
                "is_depth_map": False}


class VideoShards:
    """Appends one camera's episodes to videos/<key>/chunk-XXX/file-YYY.mp4, starting a new file once the
    current one has passed `file_size_mb` (LeRobot's video_files_size_in_mb)."""

    def __init__(self, root: Path, video_key: str, fps: int, settings: VideoSettings, *, file_size_mb: float,
                 chunks_size: int) -> None:
        self.root, self.video_key, self.fps, self.settings = root, video_key, fps, settings
        self.file_size_bytes = file_size_mb * (1 << 20)
        self.chunks_size = chunks_size
        self._position = -1  # index of the open file in the stream
        self._container = self._stream = self._path = None
        self._frames_in_file, self._bytes = 0, 0

    def append(self, frames: np.ndarray) -> dict:
        """Encode one episode's (T, H, W, 3) uint8 frames; returns its meta/episodes columns."""
        if self._container is not None and self._bytes >= self.file_size_bytes:
            self.close()
        if self._container is None:
            self._open(frames.shape[1:3])
        first = self._frames_in_file
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self._frames_in_file
            self._frames_in_file += 1
            self._mux(self._stream.encode(frame))
        chunk_index, file_index = chunk_file(self._position, self.chunks_size)
        prefix = f"videos/{self.video_key}/"
        return {prefix + "chunk_index": chunk_index, prefix + "file_index": file_index,
                prefix + "from_timestamp": first / self.fps, prefix + "to_timestamp": self._frames_in_file / self.fps}

    def _open(self, size_hw: tuple[int, int]) -> None:
        self._position += 1
        chunk_index, file_index = chunk_file(self._position, self.chunks_size)
        self._path = self.root / VIDEO_PATH.format(video_key=self.video_key, chunk_index=chunk_index,
                                                   file_index=file_index)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self._container = av.open(str(self._path), "w")
        options = {"g": str(s.gop), "crf": str(s.crf), "preset": str(s.preset)}
        self._stream = self._container.add_stream(s.codec, rate=self.fps, options=options)
        self._stream.height, self._stream.width = size_hw
        self._stream.pix_fmt = s.pix_fmt
        self._stream.codec_context.time_base = Fraction(1, self.fps)
        self._frames_in_file, self._bytes = 0, 0

    def _mux(self, packets: list) -> None:
        # Bytes of the packets written so far: the file on disk lags behind (the muxer buffers, and the
        # encoder holds frames back for its look-ahead).
        self._bytes += sum(p.size for p in packets)
        self._container.mux(packets)

    def close(self) -> None:
        if self._container is not None:
            self._mux(self._stream.encode())  # flush the frames the encoder still holds
            self._container.close()
            self._container = None


class VideoFrames:
    """Decodes frames by timestamp from LeRobot mp4 files, reading each file front to back once when the
    episodes are asked for in file order (the usual case), and seeking only when asked to go back."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._container = None
        self._frames: Iterator[tuple[float, av.VideoFrame]] | None = None
        self._pending: tuple[float, av.VideoFrame] | None = None

    def read(self, path: Path, timestamps_s: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """The frames at `timestamps_s` (ascending) of `path` as (T, H, W, 3) uint8; each must lie within
        LeRobot's tolerance of a frame in the file."""
        if not path.is_file():
            raise FileNotFoundError(f"video file {path} is missing (named by meta/episodes)")
        if path != self._path or self._pending is None or self._pending[0] > timestamps_s[0] + TOLERANCE_S:
            self._open(path, float(timestamps_s[0]))
        out = np.empty((len(timestamps_s), *shape), np.uint8)
        for i, want in enumerate(timestamps_s):
            while self._pending is not None and self._pending[0] < want - TOLERANCE_S:
                self._pending = next(self._frames, None)
            if self._pending is None or abs(self._pending[0] - want) > TOLERANCE_S:
                got = "the end of the file" if self._pending is None else f"a frame at {self._pending[0]:.6f} s"
                raise ValueError(f"{path}: no frame at {want:.6f} s (found {got}); expected one every 1/fps s "
                                 "from the episode's from_timestamp")
            image = self._pending[1].to_ndarray(format="rgb24")
            if image.shape != shape:
                raise ValueError(f"{path}: frames are {image.shape}, expected {shape} as in meta/info.json")
            out[i] = image
        return out

    def _open(self, path: Path, start_s: float) -> None:
        self.close()
        self._container = av.open(str(path))
        stream = self._container.streams.video[0]
        if start_s > 0:  # to the keyframe at or before start_s; decoding goes forward from there
            self._container.seek(max(0, round(start_s / stream.time_base) - 1), backward=True, any_frame=False,
                                 stream=stream)
        self._frames = ((float(f.pts * stream.time_base), f) for f in self._container.decode(stream)
                        if f.pts is not None)
        self._path = path
        self._pending = next(self._frames, None)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._path = self._pending = self._frames = None
