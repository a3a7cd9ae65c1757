"""pick_cube with the serl preset (RLPD's symmetric sampling with SERL's robot settings and a demo BC term; state
obs, sparse reward, scripted demos, 50/50 demo mix) through `dojo learn`: success against env steps and
wall-clock, then a final deterministic evaluation of the snapshot; saves the curve as a PNG.

Run: .venv/bin/python benchmarks/learn_pick_cube.py [--steps 30000] [--seed S] [--set utd_ratio=2 ...]
Prints one JSON line last (final_success_rate over --final-episodes, env_steps, updates, train_wall_s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dojo import runs  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
CLI = [sys.executable, "-m", "dojo.launch.cli"]
FINAL_SEED = 123_456  # final evaluations: reset seeds the stores and training never used


def dojo(*args: str) -> dict:
    """Run a dojo command; its last stdout line (JSON). Raises with the command's error line."""
    out = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dojo {args[0]} failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def record_demos(task: str, episodes: int, path: str, seed: int = 10_000, *record_args: str) -> dict:
    """Scripted-expert episodes into a real replay store (`dojo record --sim TASK --policy expert`)."""
    return dojo("record", "--sim", task, "--episodes", episodes, "--seed", seed, "--out", path, *record_args)


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
    p.add_argument("--agent", default="serl", help="a preset of dojo/learners/__init__.py")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent option override")
    p.add_argument("--learning-starts", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=eval_every)
    p.add_argument("--eval-episodes", type=int, default=eval_episodes)
    p.add_argument("--final-episodes", type=int, default=final_episodes)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run directory (default: a temporary one); a run already there is replaced")
    p.add_argument("--plot", default=plot_name, help="file name under benchmarks/results/")


def learn_and_evaluate(out: str, args, learn_args: list[str], plot_name: str, title: str):
    """`dojo learn` into out/run (from scratch), the final snapshot on `args.final_episodes` fresh episodes, the
    curve under results/. Returns (learn summary, progress rows with evaluations, final evaluation)."""
    run = os.path.join(out, "run")
    shutil.rmtree(run, ignore_errors=True)
    summary = dojo("learn", "--agent", args.agent, *[f"--set={kv}" for kv in args.set], "--seed", args.seed,
                   "--learning-starts", args.learning_starts, "--eval-every", args.eval_every,
                   "--eval-episodes", args.eval_episodes, "--no-progress", "--out", run, *learn_args)
    rows = [r for r in runs.read_progress(run) if "eval_success_rate" in r]
    final = dojo("eval", "--run", run, "--episodes", args.final_episodes, "--seed", FINAL_SEED)
    os.makedirs(RESULTS, exist_ok=True)
    plot([{**r, "success_rate": r["eval_success_rate"]} for r in rows], os.path.join(RESULTS, plot_name), title)
    return summary, rows, final


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="pick_cube", help="the twin's task")
    p.add_argument("--steps", type=int, default=30_000)
    add_run_options(p, eval_every=2000, eval_episodes=20, final_episodes=50, plot_name="learn_pick_cube.png")
    p.add_argument("--normalize", choices=("none", "demos"), default="none",
                   help="state normalisation: none, or mean/std of the demos (std floored at 1e-2)")
    p.add_argument("--n-step", type=int, default=None, help="returns over n steps (default: the agent's; serl 3, "
                                                                 "others 1)")
    args = p.parse_args(argv)

    out = args.out or tempfile.mkdtemp(prefix="learn_")
    demos = os.path.join(out, "demos.zarr")
    if not os.path.exists(demos):
        record_demos(args.task, args.demos, demos)
    t0 = time.monotonic()
    title = (f"{args.agent} {args.task} state, {args.demos} demos, seed {args.seed}, n_step {args.n_step or 'default'}, "
             f"normalize {args.normalize}" + "".join(f", {kv}" for kv in args.set))
    summary, rows, final = learn_and_evaluate(out, args, [
        "--sim", args.task, "--demos", demos, "--steps", args.steps, f"learner.normalize={args.normalize}",
        *([] if args.n_step is None else [f"learner.n_step={args.n_step}"])], args.plot, title)
    first_90 = next((r for r in rows if r["eval_success_rate"] >= 0.9), None)
    result = {"task": args.task, "agent": args.agent, "set": args.set, "seed": args.seed, "demos": args.demos,
              "n_step": args.n_step, "normalize": args.normalize, "env_steps": summary["env_steps"],
              "updates": summary["updates"], "train_wall_s": rows[-1]["train_wall_s"] if rows else None,
              "total_wall_s": round(time.monotonic() - t0, 1), "final_success_rate": final["success_rate"],
              "final_episodes": args.final_episodes,
              "first_eval_at_90": None if first_90 is None else {"env_steps": first_90["env_steps"],
                                                                 "train_wall_s": first_90["train_wall_s"],
                                                                 "success_rate": first_90["eval_success_rate"]},
              "curve": [(r["env_steps"], r["eval_success_rate"]) for r in rows]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
