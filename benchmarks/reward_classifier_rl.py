"""RL on pick_cube with the success classifier's reward against the twin's ground truth, through `dojo train`.

Two runs at the same budget and seed, state policy, the `dojo train` defaults otherwise (serl preset, 20 scripted
demos): `truth` (the twin's privileged success gives the reward and ends episodes) and `classifier`
(`reward.source=classifier`: a classifier on the front + wrist camera frames gives the reward and ends episodes,
the demos' rewards included; the twin's truth only places the cube). Both snapshots are then scored by the twin's
ground truth on the same fresh reset seeds. Also counted from the classifier run's store: episodes that the
classifier ended although the cube was not lifted (false-positive endings), and episodes in which the cube was
lifted but the classifier never said so.

Run: .venv/bin/python benchmarks/reward_classifier_rl.py --model DIR/classifier_seed0 --out DIR2
     [--env-steps 6000] [--seed 0] [--final-episodes 50]
(`--model`: a classifier folder from reward_classifier.py). Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

from learn_pick_cube import FINAL_SEED, dojo  # noqa: E402  (FINAL_SEED: reset seeds training never used)

TASK = "pick_cube"


def endings(store: str) -> dict:
    """Online episodes of a run's store judged by the twin's truth, read from the stored privileged state (the
    cube's height): how many ended on a classifier success that was not one, and how many lifted the cube
    without the classifier ending them."""
    from dojo.replay.store import StoreReader
    from dojo.sim.labeller import progress_from_state

    reader = StoreReader(store)
    counts = {"episodes": 0, "ended_on_success": 0, "false_positive_endings": 0, "missed_successes": 0,
              "reward_source": sorted({e.reward_source for e in reader.episodes})}
    for ep in reader.read_episodes(0, reader.num_episodes, obs_keys=("state",)):
        if ep.info.source != "online" or not ep.info.finished:
            continue
        lifted = progress_from_state(TASK, ep.obs["state"]) >= 1.0  # row t: the frame after step t - 1
        ended = bool(ep.terminal[-1]) if len(ep.terminal) else False
        counts["episodes"] += 1
        counts["ended_on_success"] += ended
        counts["false_positive_endings"] += ended and not lifted[-1]
        counts["missed_successes"] += (not ended) and bool(lifted[1:].any())
    return counts


def truth_success(run: str, episodes: int) -> float:
    """The run's snapshot, acting deterministically, scored by the twin's own success on fresh reset seeds."""
    from dojo.policies.evaluation import evaluate_run
    from dojo.policies.spaces import CanonicalEnv
    from dojo.sim import make_env

    env = CanonicalEnv(make_env(TASK), "success")
    try:
        return evaluate_run(run, env, episodes, seed=FINAL_SEED)["success_rate"]
    finally:
        env.close()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="classifier folder (front + wrist)")
    p.add_argument("--out", required=True)
    p.add_argument("--env-steps", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--final-episodes", type=int, default=50)
    p.add_argument("--arms", default="truth,classifier")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    summary = {"task": TASK, "env_steps": args.env_steps, "seed": args.seed, "final_episodes": args.final_episodes,
               "model": os.path.abspath(args.model)}
    for arm in [a for a in args.arms.split(",") if a]:
        run = os.path.join(args.out, f"{arm}_seed{args.seed}")
        path = run + ".json"
        if os.path.exists(path):  # a later call reuses a finished arm
            summary[arm] = json.load(open(path))
            continue
        reward = ["reward.source=classifier", f"reward.model={os.path.abspath(args.model)}"] if arm == "classifier" \
            else []
        t0 = time.monotonic()
        trained = dojo("train", "--sim", TASK, "--run", run, f"learner.env_steps={args.env_steps}",
                       f"seed={args.seed}", "eval.episodes=0", *reward)
        result = {"train_s": round(time.monotonic() - t0, 1), "train_success_rate": trained["train_success_rate"],
                  "success_rate": truth_success(run, args.final_episodes),
                  **endings(os.path.join(run, "replay", "actor-0.zarr"))}
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(json.dumps({"arm": arm, **result}), flush=True)
        summary[arm] = result
    if "truth" in summary and "classifier" in summary:
        summary["gap_points"] = round(100 * (summary["truth"]["success_rate"] - summary["classifier"]["success_rate"]),
                                      1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
