"""The RealSense driver on a recording of the twin, played through the real SDK: the frame rate reaching
`read()`, timestamp monotonicity, how long `read()` takes, and how soon a camera that stops delivering (the
recording ends) makes `read()` raise `DeviceError`. Prints one JSON line.

    .venv/bin/python benchmarks/realsense_playback.py [--frames 150] [--height 480 --width 640] [--no-depth]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")

from dojo.robot.drivers.realsense import RealSenseCamera  # noqa: E402
from dojo.robot.interfaces import DeviceError  # noqa: E402
from dojo.sim.realsense_bag import twin_frames, write_bag  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--no-depth", dest="depth", action="store_false")
    parser.add_argument("--poll-hz", type=float, default=500.0, help="how often the caller reads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "front.bag"
        recorded = write_bag(bag, twin_frames(args.frames, image_size=(args.height, args.width), fps=args.fps,
                                              depth=args.depth), serial="twin-front", fps=args.fps)
        camera = RealSenseCamera("front", "twin-front", width=args.width, height=args.height, fps=args.fps,
                                 depth=args.depth, playback_file=bag)
        seen, read_s = [], []
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    frame = camera.read()
                except DeviceError:
                    raised_at_s = time.time()
                    break
                read_s.append(time.perf_counter() - t0)
                if not seen or frame is not seen[-1]:
                    seen.append(frame)
                time.sleep(1.0 / args.poll_hz)
        finally:
            t0 = time.perf_counter()
            camera.close()
            close_s = time.perf_counter() - t0

    stamps = np.array([f.timestamp_s for f in seen])
    arrivals = np.array([f.arrival_s for f in seen])
    steps_s = np.diff(stamps)
    read_us = np.array(read_s) * 1e6
    print(json.dumps({
        "frame_px": [args.height, args.width], "depth": args.depth, "nominal_fps": args.fps,
        "frames_recorded": recorded, "frames_seen": len(seen),
        "fps_by_timestamp": round((len(seen) - 1) / (stamps[-1] - stamps[0]), 2),
        "fps_by_arrival": round((len(seen) - 1) / (arrivals[-1] - arrivals[0]), 2),
        "timestamps_increasing": bool(np.all(steps_s > 0)), "non_increasing_steps": int(np.sum(steps_s <= 0)),
        "max_timestamp_step_ms": round(float(steps_s.max()) * 1e3, 2),
        "read_us_p50": round(float(np.percentile(read_us, 50)), 1),
        "read_us_p99": round(float(np.percentile(read_us, 99)), 1), "read_us_max": round(float(read_us.max()), 1),
        "stale_after_s": camera.stale_after_s,
        "last_frame_to_raise_s": round(raised_at_s - float(arrivals[-1]), 3),
        "close_s": round(close_s, 3),
    }))


if __name__ == "__main__":
    main()
