"""Which part of the RLIF arm fails: learners trained offline on one run's intervention steps.

Given the store of an `intervention.mode=rlif` run (RUN/replay/actor-0.zarr), trains each variant on the
operator's intervened runs (held as demos by `ReplayMirror.follow(copy_interventions=True)`) and the rest of
the run's steps, then evaluates it without an operator. Prints one JSON line.

Run: .venv/bin/python benchmarks/rlif_diagnostics.py RUN/replay/actor-0.zarr [--updates 3000] [--variants ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from learn_interventions import bc_on_interventions, train_offline  # noqa: E402

# name -> (agent, reward, agent overrides); reward "rlif" relabels as RLIF, "zero" gives the critic no signal
VARIANTS = {
    "bc": ("bc", None, {}),
    "sac_bc_rlif": ("serl", "rlif", {}),
    "sac_bc_zero_reward": ("serl", "zero", {}),
    "sac_bc_only": ("serl", "zero", {"bc_weight": 100.0, "demo_ratio": 1.0}),
    "sac_bc_only_4x512": ("serl", "zero", {"bc_weight": 100.0, "demo_ratio": 1.0, "hidden_dims": (512,) * 4}),
}


def run_variant(store: str, name: str, updates: int, episodes: int) -> float:
    from dojo.learners import agent_config
    from dojo.replay.sampler import ReplayMirror, symmetric_ratio
    from dojo.rewards.interventions import episode_rlif_reward

    agent_name, reward, overrides = VARIANTS[name]
    if agent_name == "bc":  # HG-DAgger on the intervened steps: the benchmark's own BC arm
        return bc_on_interventions(Path(store), updates, episodes)["success_rate"]
    reward_fn = {None: None, "rlif": episode_rlif_reward,
                 "zero": lambda ep: np.zeros_like(ep.reward)}[reward]
    mirror = ReplayMirror()
    mirror.follow(store, copy_interventions=True, reward_fn=reward_fn)
    demo_ratio = agent_config(agent_name, overrides)[1].demo_ratio
    return train_offline(mirror, agent_name, overrides, updates, episodes,
                         symmetric_ratio(mirror.steps_by_source(), demo_ratio))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store", help="the rlif run's actor store, RUN/replay/actor-0.zarr")
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    args = p.parse_args()
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    results = {name: run_variant(args.store, name, args.updates, args.episodes) for name in names}
    print(json.dumps({"benchmark": "rlif_diagnostics", "store": args.store, "updates": args.updates,
                      "episodes": args.episodes, **{f"{k}_success_rate": v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
