"""Render one stored episode as a video: its camera views side by side above a caption band with each
step's reward, action, end-effector position, gripper width and flags. numpy, Pillow and imageio only."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dojo.replay.store import StoreReader

# The RobotEnv state layout (dojo/robot/env.py, _observe): ee position (3), ee quaternion (4),
# ee twist (6), gripper width (1), then task features.
EE_POS_M = slice(0, 3)
GRIPPER_WIDTH_INDEX = 13
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
_BLOCK_ROWS = 64  # image rows read at a time, so memory stays flat on long episodes
_MACRO_BLOCK_PX = 16  # H.264 codes 16x16 blocks: sizes are padded to it so ffmpeg need not rescale
_FONT_PX = 14
_LINE_PX = 18
_PAD_PX = 6
_TEXT = (235, 235, 235)
_ALERT = (255, 90, 70)
_BACKGROUND = (24, 24, 24)


def camera_keys(reader: StoreReader) -> list[str]:
    """Observation keys that hold RGB images: uint8 arrays of shape (H, W, 3)."""
    return [k for k, (shape, dtype) in (reader.obs_spec or {}).items()
            if np.dtype(dtype) == np.uint8 and len(shape) == 3 and shape[2] == 3]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class EpisodeRenderer:
    """Frames of one closed episode: one per stored row (num_steps + 1), each the same size.

    Camera views are scaled to a common height of at least `min_height_px` (nearest-neighbour for
    whole-number factors, so small training images stay crisp) so that the caption text fits.
    """

    def __init__(self, reader: StoreReader, episode: int, min_height_px: int = 256) -> None:
        if not 0 <= episode < reader.num_episodes:
            raise ValueError(f"episode {episode} does not exist: {reader.path} has {reader.num_episodes} closed "
                             f"episodes, expected an index in 0..{reader.num_episodes - 1}")
        if min_height_px < 1:
            raise ValueError(f"min_height_px must be >= 1, got {min_height_px}")
        self.cameras = camera_keys(reader)
        if not self.cameras:
            keys = ", ".join(f"{k} {tuple(s)} {np.dtype(d)}" for k, (s, d) in (reader.obs_spec or {}).items())
            raise ValueError(f"{reader.path} has no camera images (no uint8 HxWx3 observation key; its keys: "
                             f"{keys or 'none'}), so there is nothing to render; record with --obs-mode pixels or both")
        self.reader, self.info = reader, reader.episodes[episode]
        lo, hi = self.info.start_row, self.info.stop_row
        self._step = {k: reader.read(k, lo, hi) for k in ("action", "reward", "terminal", "truncated", "intervened")}
        self._state = reader.read("obs/state", lo, hi) if "state" in reader.obs_keys else None
        self.num_frames = hi - lo
        self.font = ImageFont.load_default(size=_FONT_PX)

        shapes = [reader.obs_spec[k][0] for k in self.cameras]
        views_h = max(min_height_px, *(h for h, _, _ in shapes))
        self._view_sizes = [(round(w * views_h / h), views_h) for h, w, _ in shapes]
        self._captions = [self.caption(t) for t in range(self.num_frames)]
        text_w = max(self.font.getlength(line) for lines in self._captions for line, _ in lines)
        views_w = sum(w for w, _ in self._view_sizes)
        self.width_px = _round_up(int(max(views_w, text_w + 2 * _PAD_PX)), _MACRO_BLOCK_PX)
        self._views_h = views_h
        self.height_px = _round_up(views_h + len(self._captions[0]) * _LINE_PX + 2 * _PAD_PX, _MACRO_BLOCK_PX)
        self._views_x = (self.width_px - views_w) // 2

    def caption(self, t: int) -> list[tuple[str, tuple[int, int, int]]]:
        """The caption lines (text, colour) of frame t; the last frame is the final observation."""
        info, last = self.info, self.num_frames - 1
        head = (f"episode {info.index}  {info.task or '?'}  {info.source}  "
                f"success={'yes' if info.success else 'no'}" + ("" if info.finished else "  (unfinished)"))
        if t < last:
            ends = "  terminal" if self._step["terminal"][t] else "  truncated" if self._step["truncated"][t] else ""
            step = f"step {t}/{last}  reward {self._step['reward'][t]:+.3f}{ends}"
            action = "action " + " ".join(f"{a:+.2f}" for a in self._step["action"][t])
            intervened = bool(self._step["intervened"][t])
        else:
            step, action, intervened = f"step {t}/{last}  final observation", "action -", False
        if self._state is None:
            arm = "state: not stored"
        else:
            s = self._state[t]
            arm = "ee [" + ", ".join(f"{v:+.3f}" for v in s[EE_POS_M]) + "] m"
            if s.shape[0] > GRIPPER_WIDTH_INDEX:
                arm += f"  gripper {s[GRIPPER_WIDTH_INDEX] * 1000:.1f} mm"
        flag = ("INTERVENED: a person is in control", _ALERT) if intervened else ("intervened: no", _TEXT)
        return [(head, _TEXT), (step, _TEXT), (action, _TEXT), (arm, _TEXT), flag]

    def frames(self) -> Iterator[np.ndarray]:
        """Yield (height_px, width_px, 3) uint8 frames in order, reading images block by block."""
        lo, hi = self.info.start_row, self.info.stop_row
        for block_lo in range(lo, hi, _BLOCK_ROWS):
            block_hi = min(hi, block_lo + _BLOCK_ROWS)
            images = {k: self.reader.read(f"obs/{k}", block_lo, block_hi) for k in self.cameras}
            for i in range(block_hi - block_lo):
                yield self._frame(block_lo - lo + i, [images[k][i] for k in self.cameras])

    def _frame(self, t: int, views: list[np.ndarray]) -> np.ndarray:
        canvas = Image.new("RGB", (self.width_px, self.height_px), _BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        x = self._views_x
        for name, rgb, (w, h) in zip(self.cameras, views, self._view_sizes):
            whole = h % rgb.shape[0] == 0 and w % rgb.shape[1] == 0
            view = Image.fromarray(rgb).resize((w, h), Image.Resampling.NEAREST if whole else Image.Resampling.BILINEAR)
            canvas.paste(view, (x, 0))
            draw.rectangle((x, 0, x + self.font.getlength(name) + 2 * _PAD_PX, _LINE_PX + 2), fill=_BACKGROUND)
            draw.text((x + _PAD_PX, 2), name, fill=_TEXT, font=self.font)
            x += w
        for i, (line, colour) in enumerate(self._captions[t]):
            draw.text((_PAD_PX, self._views_h + _PAD_PX + i * _LINE_PX), line, fill=colour, font=self.font)
        return np.asarray(canvas)


def write_video(store: str | os.PathLike | StoreReader, episode: int, out_path: str | os.PathLike, *,
                fps: float = 10.0, min_height_px: int = 256, progress: bool = False) -> dict:
    """Write episode `episode` of `store` to `out_path` (H.264); returns what was written.

    The file appears whole or not at all: frames go to a hidden temporary file renamed at the end.
    """
    import imageio.v2 as imageio  # imports the ffmpeg plugin (imageio-ffmpeg ships the binary)
    from tqdm import tqdm

    out_path = Path(out_path)
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video file {out_path} must end in one of {VIDEO_SUFFIXES}, got {out_path.suffix!r}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out_path}: directory {out_path.parent} does not exist")
    reader = store if isinstance(store, StoreReader) else StoreReader(store)
    renderer = EpisodeRenderer(reader, episode, min_height_px)
    tmp = out_path.with_name(f".{out_path.stem}.partial{out_path.suffix}")
    bar = tqdm(total=renderer.num_frames, desc=f"video episode {episode}", unit="frame", file=sys.stderr,
               disable=not progress)
    try:
        # x264's "veryfast" preset encodes these frames ~1.8x faster than its default for ~9% more bytes.
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
                                macro_block_size=_MACRO_BLOCK_PX, ffmpeg_log_level="error",
                                output_params=["-preset", "veryfast"]) as writer:
            for frame in renderer.frames():
                writer.append_data(frame)
                bar.update(1)
        os.replace(tmp, out_path)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
    return {"out": str(out_path), "episode": episode, "frames": renderer.num_frames, "fps": fps,
            "width_px": renderer.width_px, "height_px": renderer.height_px, "cameras": renderer.cameras}
