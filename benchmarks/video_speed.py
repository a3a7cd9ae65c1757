"""How fast `dojo replay video` renders: frames per second for reading the images, composing the captioned
frames, and the whole write (compose + H.264), on expert episodes recorded from the twin. Prints one JSON line.

    .venv/bin/python benchmarks/video_speed.py [--image-size 128] [--episodes 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from dojo.launch.cmd_record import record  # noqa: E402
from dojo.replay.store import EpisodeWriter, StoreReader  # noqa: E402
from dojo.replay.video import EpisodeRenderer, write_video  # noqa: E402
from dojo.sim import make_env  # noqa: E402
from dojo.sim.experts import make_expert  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "pixels.zarr"
        env = make_env("pick_cube", obs_mode="pixels", image_size=(args.image_size, args.image_size))
        with EpisodeWriter(store) as writer:
            record(env, writer, args.episodes, act=make_expert(env), seed=0)
        env.close()
        reader = StoreReader(store)
        frames = sum(e.stop_row - e.start_row for e in reader.episodes)

        t0 = time.perf_counter()
        for e in reader.episodes:
            for key in ("front", "wrist"):
                reader.read(f"obs/{key}", e.start_row, e.stop_row)
        read_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(reader.num_episodes):
            renderer = EpisodeRenderer(reader, i)
            for _ in renderer.frames():
                pass
        compose_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(reader.num_episodes):
            result = write_video(reader, i, Path(tmp) / f"ep{i}.mp4")
        write_s = time.perf_counter() - t0
        mp4_bytes = sum((Path(tmp) / f"ep{i}.mp4").stat().st_size for i in range(reader.num_episodes))

    print(json.dumps({
        "image_size": args.image_size, "frames": frames, "frame_px": [result["width_px"], result["height_px"]],
        "read_frames_per_s": round(frames / read_s, 1),
        "compose_frames_per_s": round(frames / compose_s, 1),
        "write_frames_per_s": round(frames / write_s, 1),
        "encode_share_of_write": round(1.0 - compose_s / write_s, 3),
        # against the twin's 10 Hz control rate: how many times faster than the episode played back
        "write_x_realtime_at_10hz": round(frames / write_s / 10.0, 1),
        "mp4_bytes_per_frame": round(mp4_bytes / frames),
    }))


if __name__ == "__main__":
    main()
