"""Replay store speed: steps/s written (two 128x128 cameras + state), bytes per step, and batches
sampled per second from the RAM mirror; raw `numpy.save` of the same arrays is the baseline.

    .venv/bin/python benchmarks/replay_speed.py [--steps 1500] [--out DIR]

Prints one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dojo.replay.sampler import ReplayMirror
from dojo.replay.store import EpisodeWriter, open_store

SIDE, STATE_DIM, ACTION_DIM, EPISODE_STEPS, ROBOT_HZ = 128, 20, 7, 100, 10


def camera_frames(n: int, phase: float, rng: np.random.Generator) -> np.ndarray:
    """Camera-like frames: smooth shading, a moving object and sensor noise (neither pure noise,
    which no lossless codec compresses, nor flat colour, which every codec does)."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    frames = np.empty((n, SIDE, SIDE, 3), np.uint8)
    for t in range(n):
        base = np.stack([xx * 1.2 + 30 * np.sin(t / 10 + phase), yy * 1.1 + 20 * np.cos(t / 7), (xx + yy) * 0.5], -1)
        cx, cy = 64 + 30 * np.sin(t / 5 + phase), 64 + 30 * np.cos(t / 5)
        blob = 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 200)[..., None]
        frames[t] = np.clip(base + blob + rng.normal(0, 2, (SIDE, SIDE, 3)), 0, 255)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="steps to write (episodes of 100)")
    parser.add_argument("--out", type=Path, default=None, help="directory for the stores (default: a temp dir)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="replay_speed_", dir=args.out))
    n_frames = 256
    front, wrist = camera_frames(n_frames, 0.0, rng), camera_frames(n_frames, 1.0, rng)
    state = rng.normal(size=(n_frames, STATE_DIM)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(n_frames, ACTION_DIM)).astype(np.float32)
    episodes = max(1, args.steps // EPISODE_STEPS)
    steps = episodes * EPISODE_STEPS

    def obs(i: int) -> dict[str, np.ndarray]:
        j = i % n_frames
        return {"state": state[j], "front": front[j], "wrist": wrist[j]}

    # Baseline: each episode's arrays stacked and written with numpy.save (no compression, no commits).
    t0 = time.perf_counter()
    for e in range(episodes):
        idx = np.arange(e * EPISODE_STEPS, (e + 1) * EPISODE_STEPS + 1) % n_frames
        for name, arr in (("state", state), ("front", front), ("wrist", wrist), ("action", action)):
            np.save(root / f"npy_{e}_{name}.npy", arr[idx])
        np.save(root / f"npy_{e}_reward.npy", np.zeros(EPISODE_STEPS + 1, np.float32))
    npy_steps_s = steps / (time.perf_counter() - t0)

    results, cpu_s = {}, {}
    for durable in (True, False):
        path = root / f"store_durable_{durable}"
        t0, c0 = time.perf_counter(), time.process_time()
        with EpisodeWriter(path, durable=durable) as writer:  # default 1 s commit groups
            i = 0
            for _ in range(episodes):
                writer.begin_episode(source="online")
                for t in range(EPISODE_STEPS):
                    last = t == EPISODE_STEPS - 1
                    writer.add_step(obs(i), action[i % n_frames], float(last), last, False)
                    i += 1
                writer.end_episode(obs(i), success=True)
        results[durable] = steps / (time.perf_counter() - t0)
        # CPU seconds (all threads) per step: robust to other processes sharing the cores.
        cpu_s[durable] = (time.process_time() - c0) / steps
    store = root / "store_durable_True"
    summary = open_store(store).summary()

    def sample_ms(mirror: ReplayMirror, n_step: int, repeats: int) -> float:
        sample_rng = np.random.default_rng(1)
        mirror.sample(256, sample_rng, n_step=n_step)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            mirror.sample(256, sample_rng, n_step=n_step, gamma=0.99)
        return (time.perf_counter() - t0) / repeats * 1e3

    state_mirror = ReplayMirror.from_store(store, obs_keys=("state",))
    t0 = time.perf_counter()
    image_mirror = ReplayMirror.from_store(store)
    load_steps_s = image_mirror.num_steps / (time.perf_counter() - t0)
    state_ms = sample_ms(state_mirror, 1, 500)
    state_n3_ms = sample_ms(state_mirror, 3, 500)
    image_ms = sample_ms(image_mirror, 1, 50)
    image_stack_ms = _time_stack(image_mirror)

    out = {
        "benchmark": "replay_speed",
        "steps": steps,
        "write_steps_per_s": round(results[True], 1),
        "write_steps_per_s_no_fsync": round(results[False], 1),
        "write_cpu_ms_per_step": round(cpu_s[True] * 1e3, 3),
        "write_steps_per_cpu_s": round(1 / cpu_s[True], 1),
        "write_x_robot_rate": round(results[True] / ROBOT_HZ, 1),  # target >= 50 (10 Hz, two cameras)
        "numpy_save_steps_per_s": round(npy_steps_s, 1),
        "write_vs_numpy_save": round(results[True] / npy_steps_s, 3),
        "bytes_per_step": round(summary["bytes"] / steps, 1),
        "raw_bytes_per_step": 2 * SIDE * SIDE * 3 + 4 * (STATE_DIM + ACTION_DIM + 2) + 3,
        "mirror_load_steps_per_s": round(load_steps_s, 1),
        "sample_state_ms": round(state_ms, 3),
        "sample_state_batches_per_s": round(1e3 / state_ms, 1),
        "sample_state_nstep3_ms": round(state_n3_ms, 3),
        "sample_images_ms": round(image_ms, 3),
        "sample_images_batches_per_s": round(1e3 / image_ms, 1),
        "sample_images_stack2_ms": round(image_stack_ms, 3),
        "batch_size": 256,
    }
    shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))


def _time_stack(mirror: ReplayMirror, repeats: int = 20) -> float:
    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    for _ in range(repeats):
        mirror.sample(256, rng, n_step=3, frame_stack=2)
    return (time.perf_counter() - t0) / repeats * 1e3


if __name__ == "__main__":
    main()
