"""RLPD with the conv encoder (DrQ shifts) on the twin's pick_cube from pixels: two cameras (front, wrist)
plus proprioception, scripted demos; measures updates/s and env steps/s, then learns for a bounded run.

Run: .venv/bin/python benchmarks/learn_pixels.py [--image-size 64] [--steps 3000] [--set KEY=VALUE ...]
Prints one JSON line last (updates_per_s, env_steps_per_s, compile_s, success curve, final success).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from dojo.learners import make_agent  # noqa: E402
from dojo.policies.spaces import ObsAdapter  # noqa: E402
from dojo.replay.sampler import ReplayMirror  # noqa: E402
from dojo.sim import make_env  # noqa: E402
from learn_pick_cube import add_run_options, learn_and_evaluate, record_demos  # noqa: E402

TASK = "pick_cube"


def time_updates(agent, mirror: ReplayMirror, updates: int, seed: int = 0) -> dict:
    """Compile time of the first update, then updates/s over `updates` more (sampling included and apart)."""
    rng = np.random.default_rng(seed)
    size = agent.config.batch_size * agent.config.utd_ratio
    t0 = time.perf_counter()
    agent, info = agent.update(mirror.sample(size, rng, source_ratio={"demo": 1.0}))
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    batches = [mirror.sample(size, rng) for _ in range(updates)]
    t0 = time.perf_counter()
    for batch in batches:
        agent, info = agent.update(batch)
    jax.block_until_ready(info)
    update_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(updates):
        mirror.sample(size, rng)
    sample_s = time.perf_counter() - t0
    return {"compile_s": round(compile_s, 2), "updates_per_s": round(updates / update_s, 2),
            "updates_per_s_with_sampling": round(updates / (update_s + sample_s), 2)}


def time_env_steps(env, agent, steps: int, seed: int = 0) -> dict:
    """Env steps/s with rendering alone (zero actions), and with the policy acting (sampling)."""
    adapter = ObsAdapter(env.observation_space)
    obs, _ = env.reset(seed=seed)
    key = jax.random.PRNGKey(seed)
    act = agent.sample_actions({k: v[None] for k, v in adapter(obs).items()}, key)  # compile
    jax.block_until_ready(act)
    zero = np.zeros(env.action_space.shape, np.float32)
    t0 = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(zero)
        if terminated or truncated:
            obs, _ = env.reset()
    env_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        key, k = jax.random.split(key)
        action = np.asarray(agent.sample_actions({k_: v[None] for k_, v in adapter(obs).items()}, k))[0]
        obs, _, terminated, truncated, _ = env.step(agent.action_scale.to_env(action))
        if terminated or truncated:
            obs, _ = env.reset()
    act_s = time.perf_counter() - t0
    return {"env_steps_per_s": round(steps / env_s, 1), "env_steps_per_s_with_policy": round(steps / act_s, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image-size", type=int, default=64, help="square camera images, pixels per side")
    p.add_argument("--steps", type=int, default=3000, help="online env steps")
    p.add_argument("--time-updates", type=int, default=30, help="updates timed after the compile")
    p.add_argument("--time-env-steps", type=int, default=200)
    add_run_options(p, eval_every=1000, eval_episodes=10, final_episodes=20, plot_name="learn_pixels.png")
    args = p.parse_args(argv)
    if args.image_size < 16:
        raise ValueError(f"--image-size must be >= 16 pixels, got {args.image_size}")

    out = args.out or tempfile.mkdtemp(prefix="learn_pixels_")
    demos = os.path.join(out, "demos.zarr")
    t0 = time.monotonic()
    if not os.path.exists(demos):
        record_demos(TASK, args.demos, demos, 10_000, "--obs-mode", "pixels", "--image-size", str(args.image_size))
    record_s = time.monotonic() - t0
    mirror = ReplayMirror.from_store(demos)
    eval_env = make_env(TASK, obs_mode="pixels", image_size=(args.image_size, args.image_size))
    options = {k: OmegaConf.to_object(OmegaConf.from_dotlist([f"v={v}"]))["v"]
               for k, v in (kv.split("=", 1) for kv in args.set)}
    agent = make_agent(args.agent, eval_env.observation_space, eval_env.action_space, args.seed, options)
    speed = {**time_updates(agent, mirror, args.time_updates, args.seed),
             **time_env_steps(eval_env, agent, args.time_env_steps, args.seed)}
    eval_env.close()
    print(json.dumps({"speed": speed}), flush=True)

    title = (f"{args.agent} {TASK} pixels {args.image_size}x{args.image_size} (front + wrist) + proprio, "
             f"{args.demos} demos" + "".join(f", {kv}" for kv in args.set))
    summary, rows, final = learn_and_evaluate(out, args, [
        "--sim", TASK, "--demos", demos, "--steps", str(args.steps), "env.obs_mode=pixels",
        f"env.image_size={args.image_size}"], args.plot, title)
    train_wall_s = rows[-1]["train_wall_s"] if rows else None
    result = {"task": TASK, "obs": f"pixels {args.image_size}x{args.image_size}, front + wrist, proprio",
              "agent": args.agent, "set": args.set, "demos": args.demos, "record_demos_s": round(record_s, 1),
              **speed, "env_steps": summary["env_steps"], "updates": summary["updates"], "train_wall_s": train_wall_s,
              "train_env_steps_per_s": round(summary["env_steps"] / train_wall_s, 2) if train_wall_s else None,
              "final_success_rate": final["success_rate"], "final_episodes": args.final_episodes,
              "curve": [(r["env_steps"], r["eval_success_rate"]) for r in rows]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
