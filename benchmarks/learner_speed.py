"""Learner speed: RLPD updates/s for state obs (E=10, M=2, batch 256, two 256-wide LayerNorm layers) and
for pixels (two 128x128 cameras), JIT compile time apart, and the share of this machine's dense matmul
throughput (measured in the same run at the critic's shapes) that the state update achieves.

Run: .venv/bin/python benchmarks/learner_speed.py [--pixel-calls 3] [--state-calls 10]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import gymnasium as gym  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from dojo.learners import sac  # noqa: E402

STATE_DIM, ACTION_DIM, HIDDEN, BATCH = 32, 4, 256, 256


def make_batch(rng, size, space):
    def obs():
        return {k: (rng.integers(0, 256, (size, *s.shape), dtype=np.uint8) if s.dtype == np.uint8
                    else rng.normal(size=(size, *s.shape)).astype(np.float32)) for k, s in space.spaces.items()}
    return {"obs": obs(), "next_obs": obs(), "action": rng.uniform(-1, 1, (size, ACTION_DIM)).astype(np.float32),
            "reward": rng.normal(size=size).astype(np.float32), "discount": np.full(size, 0.99, np.float32)}


def time_updates(agent, batch, calls):
    """(compile_s, seconds per call): the first call compiles; the rest are timed, best of 2 rounds."""
    batch = jax.device_put(batch)
    t0 = time.perf_counter()
    agent, info = agent.update(batch)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(calls):
            agent, info = agent.update(batch)
        jax.block_until_ready(info)
        best = min(best, (time.perf_counter() - t0) / calls)
    return compile_s, best


def dense_flops_per_call(cfg: sac.Config) -> float:
    """Matmul FLOPs of one RLPD update call (dense layers only; they dominate the cost).

    Per critic step: E online critics forward + backward (~3x forward), M target critics forward, and the
    actor forward for next actions. Once per call: actor forward + backward and E critics forward plus the
    backward to the action input (~2x forward).
    """
    e, m, g, b, h = cfg.num_qs, cfg.num_min_qs, cfg.utd_ratio, cfg.batch_size, HIDDEN
    critic = 2 * ((STATE_DIM + ACTION_DIM) * h + h * h + h)
    actor = 2 * (STATE_DIM * h + h * h + h * 2 * ACTION_DIM)
    return g * b * ((3 * e + m) * critic + actor) + b * (3 * actor + 2 * e * critic)


def matmul_flops_per_s(e, b, h, reps=64):
    """This machine's throughput on the critic's dominant op: E batched (b x h) @ (h x h) matmuls."""
    x = jnp.ones((e, b, h), jnp.float32)
    w = jax.random.normal(jax.random.PRNGKey(0), (e, h, h)) / np.sqrt(h)

    @jax.jit
    def chain(x, w):
        return jax.lax.fori_loop(0, reps, lambda _, y: jnp.einsum("ebi,eio->ebo", y, w), x)

    jax.block_until_ready(chain(x, w))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(chain(x, w))
        best = min(best, time.perf_counter() - t0)
    return reps * 2 * e * b * h * h / best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-calls", type=int, default=10)
    parser.add_argument("--pixel-calls", type=int, default=3)
    parser.add_argument("--utd", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    actions = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)

    state_space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (STATE_DIM,), np.float32)})
    cfg = sac.get_config(num_qs=10, num_min_qs=2, batch_size=BATCH, hidden_dims=(HIDDEN, HIDDEN),
                         critic_layer_norm=True, utd_ratio=args.utd)
    agent = sac.create(0, state_space, actions, cfg)
    state_compile_s, state_call_s = time_updates(agent, make_batch(rng, BATCH * cfg.utd_ratio, state_space),
                                                 args.state_calls)
    achieved = dense_flops_per_call(cfg) / state_call_s
    peak = matmul_flops_per_s(cfg.num_qs, BATCH, HIDDEN)

    pixel_space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (STATE_DIM,), np.float32),
                                   "front": gym.spaces.Box(0, 255, (128, 128, 3), np.uint8),
                                   "wrist": gym.spaces.Box(0, 255, (128, 128, 3), np.uint8)})
    pcfg = sac.get_config(num_qs=10, num_min_qs=2, batch_size=BATCH, hidden_dims=(HIDDEN, HIDDEN), utd_ratio=1)
    pagent = sac.create(0, pixel_space, actions, pcfg)
    pixel_compile_s, pixel_call_s = time_updates(pagent, make_batch(rng, BATCH, pixel_space), args.pixel_calls)

    print(json.dumps({
        "device": jax.devices()[0].platform, "cpu_count": os.cpu_count(),
        "state_utd_ratio": cfg.utd_ratio,
        "state_critic_updates_per_s": round(cfg.utd_ratio / state_call_s, 1),
        "state_calls_per_s": round(1 / state_call_s, 2),
        "state_compile_s": round(state_compile_s, 2),
        "state_gflops_per_s": round(achieved / 1e9, 2),
        "matmul_gflops_per_s": round(peak / 1e9, 2),
        "state_fraction_of_matmul": round(achieved / peak, 3),
        "pixel_updates_per_s": round(1 / pixel_call_s, 3),
        "pixel_compile_s": round(pixel_compile_s, 2),
        "pixel_batch": BATCH, "pixel_cameras": 2, "pixel_hw": 128,
    }))


if __name__ == "__main__":
    main()
