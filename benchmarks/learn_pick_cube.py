"""RLPD on the twin's pick_cube (state obs, sparse reward, scripted demos, 50/50 demo mix): success against
env steps and wall-clock, then a final deterministic evaluation; saves the curve as a PNG.

Run: .venv/bin/python benchmarks/learn_pick_cube.py [--steps 30000] [--set utd_ratio=2 ...]
Prints one JSON line last (final_success_rate over --final-episodes, env_steps, updates, train_wall_s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from dojo.launch.cmd_learn import _key_values  # noqa: E402
from dojo.learners import loop  # noqa: E402
from dojo.replay.sampler import ReplayMirror  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")

# The settings this benchmark found to work (see results/README.md); --set overrides any of them.
# bc_weight is not part of RLPD (a demo BC term in the actor loss); bc_weight=0.0 gives plain RLPD.
RLPD_SETTINGS = {"utd_ratio": 1, "num_qs": 2, "batch_size": 256, "backup_entropy": False,
                 "init_temperature": 0.01, "discount": 0.99, "bc_weight": 1.0}


def record_demos(task: str, episodes: int, path: str, seed: int = 10_000, **env_kwargs) -> dict:
    """Scripted-expert episodes into a real replay store (as `dojo record --sim TASK --policy expert`);
    `env_kwargs` go to the twin's make_env (e.g. obs_mode="pixels")."""
    from dojo.launch.cmd_record import record
    from dojo.replay.store import EpisodeWriter
    from dojo.sim.envs import make_env
    from dojo.sim.experts import make_expert

    env = make_env(task, **env_kwargs)
    writer = EpisodeWriter(path)
    try:
        return record(env, writer, episodes, act=make_expert(env), seed=seed)
    finally:
        writer.close()
        env.close()


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    success = [r["success_rate"] for r in rows]
    axes[0].plot([r["env_steps"] for r in rows], success, marker="o")
    axes[0].set_xlabel("env steps")
    axes[1].plot([r["train_wall_s"] / 60 for r in rows], success, marker="o")
    axes[1].set_xlabel("wall-clock, minutes (training only, evaluation excluded)")
    axes[0].set_ylabel("success rate (deterministic)")
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_run_options(p: argparse.ArgumentParser, eval_every: int, eval_episodes: int, final_episodes: int,
                    plot_name: str) -> None:
    """The options every online learning benchmark here takes, with its own defaults."""
    p.add_argument("--demos", type=int, default=20)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RLPD config override")
    p.add_argument("--learning-starts", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=eval_every)
    p.add_argument("--eval-episodes", type=int, default=eval_episodes)
    p.add_argument("--final-episodes", type=int, default=final_episodes)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run directory (default: a temporary one)")
    p.add_argument("--plot", default=plot_name, help="file name under benchmarks/results/")


def train_and_evaluate(env, eval_env, agent, mirror: ReplayMirror, cfg, out: str, final_episodes: int,
                       plot_name: str, title: str):
    """Run the online loop into `out`, evaluate the final policy deterministically on `final_episodes`,
    plot the curve under results/. Returns (loop summary, metric rows, final evaluation)."""
    metrics = os.path.join(out, "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    agent, summary = loop.run_online(env, agent, mirror, cfg, out, eval_env=eval_env)
    rows = [json.loads(line) for line in open(metrics)]
    final = loop.evaluate(eval_env, loop.policy_act(agent, agent.action_scale), final_episodes, seed=123_456)
    os.makedirs(RESULTS, exist_ok=True)
    plot(rows, os.path.join(RESULTS, plot_name), title)
    return summary, rows, final


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="dojo/PickCube-v0")
    p.add_argument("--steps", type=int, default=30_000)
    add_run_options(p, eval_every=2000, eval_episodes=20, final_episodes=50, plot_name="learn_pick_cube.png")
    p.add_argument("--normalize", choices=("none", "demos"), default="none",
                   help="state normalisation: none, or mean/std of the demos (std floored at --min-std)")
    p.add_argument("--min-std", type=float, default=1e-2)
    p.add_argument("--n-step", type=int, default=1)
    args = p.parse_args(argv)

    out = args.out or tempfile.mkdtemp(prefix="learn_")
    task = {"dojo/PickCube-v0": "pick_cube", "dojo/PegInsert-v0": "peg_insert", "dojo/Reach-v0": "reach"}[args.env]
    demos = os.path.join(out, "demos.zarr")
    if not os.path.exists(demos):
        record_demos(task, args.demos, demos)
    mirror = ReplayMirror.from_store(demos)
    env, eval_env = loop.make_env(args.env), loop.make_env(args.env)
    overrides = {**RLPD_SETTINGS, **_key_values(args.set, "--set")}
    stats = loop.state_stats(mirror, "demo", args.min_std) if args.normalize == "demos" else None
    agent = loop.make_agent("rlpd", env.observation_space, env.action_space, args.seed, overrides, obs_stats=stats)
    cfg = loop.LoopConfig(steps=args.steps, seed=args.seed, learning_starts=args.learning_starts, random_steps=0,
                          eval_every=args.eval_every, eval_episodes=args.eval_episodes, checkpoint_every=0,
                          n_step=args.n_step, progress=False)
    t0 = time.monotonic()
    title = (f"RLPD {args.env} state, {args.demos} demos, n_step {args.n_step}, normalize {args.normalize}, "
             + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    summary, rows, final = train_and_evaluate(env, eval_env, agent, mirror, cfg, out, args.final_episodes,
                                              args.plot, title)
    first_90 = next((r for r in rows if r["success_rate"] >= 0.9), None)
    result = {"env": args.env, "agent": "rlpd", **overrides, "demos": args.demos, "n_step": args.n_step,
              "normalize": args.normalize, "env_steps": summary["env_steps"], "updates": summary["updates"],
              "train_wall_s": rows[-1]["train_wall_s"], "total_wall_s": round(time.monotonic() - t0, 1),
              "final_success_rate": final["success_rate"], "final_episodes": args.final_episodes,
              "first_eval_at_90": None if first_90 is None else {k: first_90[k] for k in
                                                                  ("env_steps", "train_wall_s", "success_rate")},
              "curve": [(r["env_steps"], r["success_rate"]) for r in rows]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
