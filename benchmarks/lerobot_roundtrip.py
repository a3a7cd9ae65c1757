"""LeRobot v3 export and import: how exact and how fast. Exports a pixels store (two 64 px cameras, 20 expert
episodes of pick_cube, as `dojo record --sim pick_cube --obs-mode pixels --image-size 64 --episodes 20` records
it), imports the export back, and compares every row; with --lerobot-python (a Python that has lerobot 0.6, which
cannot share dojo's venv) also loads the export with the real LeRobotDataset in a subprocess and compares every
frame it returns. Prints one JSON line.

    .venv/bin/python benchmarks/lerobot_roundtrip.py [--store STORE] [--lerobot-python /tmp/lerobot-venv/bin/python]

The same file is the LeRobot side: `PY benchmarks/lerobot_roundtrip.py --lerobot-dump DIR OUT` loads DIR with
LeRobotDataset, reads every frame through __getitem__ (the path training takes) and writes OUT.npz + OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ID = "dojo/roundtrip"  # any id: the dataset is read from its local folder, nothing is downloaded


def lerobot_dump(root: str, out: str, video_backend: str | None) -> None:
    """Run under LeRobot's Python: every frame of the dataset at `root`, as LeRobotDataset returns it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    t0 = time.perf_counter()
    ds = LeRobotDataset(REPO_ID, root=root, video_backend=video_backend)
    open_s = time.perf_counter() - t0
    cameras = ds.meta.video_keys
    columns = ["observation.state", "action", "next.reward", "next.done", "next.truncated", "intervention",
               "episode_index", "frame_index", "timestamp"]
    values = {k: [] for k in columns + cameras}
    tasks = []
    t0 = time.perf_counter()
    for i in range(len(ds)):
        item = ds[i]
        for k in columns:
            values[k].append(item[k].numpy())
        for k in cameras:  # float32 (C, H, W) in [0, 1] -> the uint8 (H, W, C) it was decoded from
            values[k].append(np.round(item[k].numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
        tasks.append(item["task"])
    read_s = time.perf_counter() - t0
    np.savez(out + ".npz", **{k: np.stack(v) for k, v in values.items()})
    episodes = [{k: v for k, v in ds.meta.episodes[i].items() if k.startswith("dojo/") or k == "tasks"}
                for i in range(ds.meta.total_episodes)]
    Path(out + ".json").write_text(json.dumps({
        "lerobot_version": lerobot.__version__, "video_backend": ds.reader._video_backend, "cameras": cameras,
        "fps": ds.fps, "frames": len(ds), "episodes": episodes, "tasks": tasks, "open_s": open_s, "read_s": read_s}))


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else round(float(10 * np.log10(255.0**2 / mse)), 2)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def record_store(path: Path, episodes: int, image_size: int) -> None:
    """What `dojo record --sim pick_cube --obs-mode pixels --image-size N --episodes K` writes (seed 0)."""
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    from dojo.launch.cmd_record import record
    from dojo.replay.store import EpisodeWriter
    from dojo.sim import make_env
    from dojo.sim.experts import make_expert

    env = make_env("pick_cube", obs_mode="pixels", image_size=(image_size, image_size), max_episode_steps=100)
    with EpisodeWriter(path) as writer:
        record(env, writer, episodes, act=make_expert(env), seed=0, operator="scripted-expert")
    env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None, help="pixels store to use (default: record one in a temp folder)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--lerobot-python", default=None, metavar="PY", help="a Python with lerobot 0.6 installed")
    parser.add_argument("--video-backend", default=None, help="LeRobot's decoder (default: LeRobot's choice)")
    parser.add_argument("--lerobot-dump", nargs=2, metavar=("DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lerobot_dump:
        lerobot_dump(*args.lerobot_dump, args.video_backend)
        return

    from dojo.replay.lerobot.export import camera_keys, export_lerobot
    from dojo.replay.lerobot.importer import import_lerobot
    from dojo.replay.store import StoreReader

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = Path(args.store) if args.store else tmp / "pixels.zarr"
        if not args.store:
            record_store(store, args.episodes, args.image_size)
        reader = StoreReader(store)
        cameras = camera_keys(reader.obs_spec)
        rows = {k: reader.read(k) for k in ("obs/state", "action", "reward", "terminal", "truncated", "intervened")}
        images = {k: reader.read(f"obs/{k}") for k in cameras}

        t0 = time.perf_counter()
        exported = export_lerobot(reader, tmp / "lerobot", fps=args.fps)
        export_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        import_lerobot(tmp / "lerobot", tmp / "back.zarr")
        import_s = time.perf_counter() - t0
        back = StoreReader(tmp / "back.zarr")
        result = {
            "episodes": reader.num_episodes, "frames": reader.num_rows, "cameras": cameras,
            "image_px": list(reader.obs_spec[cameras[0]][0][:2]), "fps": args.fps,
            "export_s": round(export_s, 2), "import_s": round(import_s, 2),
            "export_frames_per_s": round(reader.num_rows / export_s, 1),
            "import_frames_per_s": round(reader.num_rows / import_s, 1),
            "export_bytes": exported["bytes"],
            "state_max_abs_error": max_abs(rows["obs/state"], back.read("obs/state")),
            "action_max_abs_error": max_abs(rows["action"], back.read("action")),
            "image_psnr_db": {k: psnr_db(images[k], back.read(f"obs/{k}")) for k in cameras},
            "image_max_abs_error": {k: max_abs(images[k], back.read(f"obs/{k}")) for k in cameras},
            "flags_equal": all(np.array_equal(rows[k], back.read(k))
                               for k in ("reward", "terminal", "truncated", "intervened")),
            "metadata_equal": [e.__dict__ for e in reader.episodes] == [e.__dict__ for e in back.episodes],
        }
        if args.lerobot_python:
            result.update(compare_with_lerobot(args, tmp, reader, rows, images, cameras))
    print(json.dumps(result))


def compare_with_lerobot(args, tmp: Path, reader, rows: dict, images: dict, cameras: list[str]) -> dict:
    """Load the export with the real LeRobotDataset (in LeRobot's own Python) and compare every frame."""
    out = str(tmp / "lerobot_frames")
    command = [args.lerobot_python, str(Path(__file__).resolve()), "--lerobot-dump", str(tmp / "lerobot"), out]
    if args.video_backend:
        command += ["--video-backend", args.video_backend]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall_s = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"LeRobot could not load the export ({args.lerobot_python}, exit {done.returncode}):\n"
                 + done.stderr[-4000:])
    loaded = np.load(out + ".npz")
    meta = json.loads(Path(out + ".json").read_text())
    order = np.lexsort((loaded["frame_index"], loaded["episode_index"]))  # LeRobot's frame order is the store's
    starts = np.array([e.start_row for e in reader.episodes])
    store_rows = starts[loaded["episode_index"][order]] + loaded["frame_index"][order]
    dojo_columns = [{k: getattr(e, k[5:]) for k in meta["episodes"][i] if k.startswith("dojo/")}
                    for i, e in enumerate(reader.episodes)]
    return {
        "lerobot_version": meta["lerobot_version"], "lerobot_video_backend": meta["video_backend"],
        "lerobot_frames": meta["frames"], "lerobot_load_s": round(meta["open_s"] + meta["read_s"], 2),
        "lerobot_frames_per_s": round(meta["frames"] / meta["read_s"], 1),
        "lerobot_subprocess_s": round(wall_s, 2),
        "lerobot_rows_match": bool(np.array_equal(store_rows, np.arange(reader.num_rows))),
        "lerobot_state_max_abs_error": max_abs(rows["obs/state"], loaded["observation.state"][order]),
        "lerobot_action_max_abs_error": max_abs(rows["action"], loaded["action"][order]),
        "lerobot_image_psnr_db": {k: psnr_db(images[k], loaded[f"observation.images.{k}"][order]) for k in cameras},
        "lerobot_flags_equal": all(np.array_equal(rows[k], loaded[name][order]) for k, name in (
            ("reward", "next.reward"), ("terminal", "next.done"), ("truncated", "next.truncated"),
            ("intervened", "intervention"))),
        "lerobot_tasks_equal": [meta["tasks"][i] for i in order] == [
            (e.instruction or e.task) for e in reader.episodes for _ in range(e.stop_row - e.start_row)],
        "lerobot_dojo_columns_equal": dojo_columns == [{k: v for k, v in m.items() if k.startswith("dojo/")}
                                                       for m in meta["episodes"]],
    }


if __name__ == "__main__":
    main()
