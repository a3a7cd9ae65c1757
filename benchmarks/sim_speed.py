"""How fast the twin runs: env steps/s at the default 10 Hz control rate for obs_mode state and pixels
(two 128x128 cameras), the real-time factor, and same-run baselines (bare physics, one render).

    python benchmarks/sim_speed.py [--task pick_cube] [--state-steps 3000] [--pixel-steps 300]

Prints one JSON line (the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; before mujoco is imported
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, as the target is stated

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from dojo.sim import make_env  # noqa: E402
from dojo.sim.camera import SimCamera  # noqa: E402


def env_steps_per_s(task: str, obs_mode: str, n_steps: int, image_size=(128, 128)) -> tuple[float, float, float]:
    """Steps per wall second, simulated seconds per wall second, and steps per CPU second of this
    process (less sensitive to other load on a shared machine) over `n_steps` random-action steps."""
    env = make_env(task, obs_mode=obs_mode, image_size=image_size)
    actions = np.random.default_rng(0).uniform(-1, 1, (n_steps, env.action_space.shape[0])).astype(np.float32)
    env.reset(seed=0)
    sim_s = 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        sim_s += env.period_s
        if terminated or truncated:
            env.reset()
    wall_s, cpu_s = time.perf_counter() - start, time.process_time() - start_cpu
    env.close()
    return n_steps / wall_s, sim_s / wall_s, n_steps / cpu_s


def physics_only_steps_per_s(task: str, n_steps: int) -> float:
    """The same simulated time as `n_steps` env steps in bare mj_step calls: no controller, no env."""
    env = make_env(task)
    env.reset(seed=0)
    world = env.arm.world
    physics_steps_per_env_step = round(env.period_s / world.model.opt.timestep)
    start = time.perf_counter()
    for _ in range(n_steps):
        mujoco.mj_step(world.model, world.data, physics_steps_per_env_step)
    return n_steps / (time.perf_counter() - start)


def render_ms(task: str, n_frames: int = 50) -> float:
    env = make_env(task)
    env.reset(seed=0)
    camera = SimCamera(env.arm.world, "front", (128, 128))
    camera.read()
    start = time.perf_counter()
    for _ in range(n_frames):
        camera.read()
    ms = (time.perf_counter() - start) / n_frames * 1e3
    camera.close()
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pick_cube")
    parser.add_argument("--state-steps", type=int, default=3000)
    parser.add_argument("--pixel-steps", type=int, default=300)
    args = parser.parse_args()

    physics = physics_only_steps_per_s(args.task, args.state_steps)
    state_sps, state_rtf, state_cpu = env_steps_per_s(args.task, "state", args.state_steps)
    pixel_sps, pixel_rtf, pixel_cpu = env_steps_per_s(args.task, "pixels", args.pixel_steps)
    frame_ms = render_ms(args.task)
    arm = make_env(args.task).arm
    print(json.dumps({
        "task": args.task, "control_hz": 10.0, "physics_dt_s": arm.world.model.opt.timestep,
        "controller_hz": round(1.0 / arm.control_dt_s, 1),
        "state_steps_per_s": round(state_sps, 1), "state_realtime_factor": round(state_rtf, 1),
        "state_steps_per_cpu_s": round(state_cpu, 1),
        "pixels_steps_per_s": round(pixel_sps, 1), "pixels_realtime_factor": round(pixel_rtf, 1),
        "pixels_steps_per_cpu_s": round(pixel_cpu, 1),
        "physics_only_steps_per_s": round(physics, 1),
        "state_over_physics_only": round(state_sps / physics, 3),
        "render_ms_per_128px_frame": round(frame_ms, 2),
    }))


if __name__ == "__main__":
    main()
