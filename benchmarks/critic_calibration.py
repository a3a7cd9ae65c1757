"""Does a run's critic know its failures? The run's last checkpoint scores the action taken at every step of its
practice episodes, and that Q is set against the discounted return-to-go that followed (with the critic's own
discount), for the failed and the successful episodes apart, in consecutive chunks of episodes through the run.

A critic whose failed episodes get a Q near or above its successes' (or above the largest return the rewards
allow: 1 for the twin's 0/1 reward on the success step that ends the episode) overestimates what failing leads
to, and an actor that climbs it drifts towards failing.

Run: .venv/bin/python benchmarks/critic_calibration.py RUN [--chunks 6]
Prints one JSON line: per chunk, the episodes, success rate, mean Q(s, a) and mean return-to-go of the failed and
of the successful episodes; the same for the demos; and the checkpoint's discount.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dojo import runs  # noqa: E402


def episode_q(agent, episode) -> np.ndarray:
    """Mean over the critic heads of Q(s_t, a_t) at every step of a stored episode."""
    from dojo.learners import common

    critic = agent.modules[1]
    obs = common.preprocess(agent, None, {k: v[:-1] for k, v in episode.obs.items()}, augment=False)
    return np.asarray(critic.apply({"params": agent.critic_params}, obs, episode.action)).mean(0)


def summarise(agent, episodes: list, gamma: float) -> dict:
    """Episodes, success rate, and mean Q and return-to-go (over each episode's steps, then episodes) of the
    failed and the successful ones."""
    from dojo.replay.store import mc_return_to_go

    out = {"episodes": len(episodes), "success": round(float(np.mean([e.info.success for e in episodes])), 3)}
    for name, group in (("failed", [e for e in episodes if not e.info.success]),
                        ("succeeded", [e for e in episodes if e.info.success])):
        if group:
            out[f"{name}_q"] = round(float(np.mean([episode_q(agent, e).mean() for e in group])), 3)
            out[f"{name}_return"] = round(float(np.mean([mc_return_to_go(e.reward, e.terminal, gamma).mean()
                                                         for e in group])), 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--chunks", type=int, default=6)
    args = p.parse_args()
    run = Path(args.run)
    if args.chunks < 1:
        sys.exit(f"critic_calibration.py: error: --chunks must be >= 1, got {args.chunks}")
    if not (run / runs.CHECKPOINT).is_file():
        sys.exit(f"critic_calibration.py: error: {str(run)!r} has no {runs.CHECKPOINT} (not a run, or no checkpoint yet)")

    from dojo.learners.checkpoint import load_checkpoint
    from dojo.replay.store import StoreReader

    agent, _ = load_checkpoint(str(run / runs.CHECKPOINT))
    if not hasattr(agent, "critic_params"):
        sys.exit(f"critic_calibration.py: error: the {agent.config.agent_name} agent of {str(run)!r} has no critic")
    gamma = float(agent.config.discount)

    def finished(store: Path) -> list:
        reader = StoreReader(store)
        return [e for e in reader.read_episodes(0, reader.num_episodes) if e.info.finished]

    practice = sorted((e for store in sorted((run / runs.REPLAY).glob("*.zarr")) for e in finished(store)),
                      key=lambda e: e.info.start_time_s)
    if not practice:
        sys.exit(f"critic_calibration.py: error: {str(run)!r} has no finished practice episode")
    size = -(-len(practice) // args.chunks)
    demos = run / "demos.zarr"  # where `dojo train` and `dojo practice` record their demos
    print(json.dumps({"run": str(run), "discount": gamma,
                      "demos": summarise(agent, finished(demos), gamma) if demos.exists() else None,
                      "chunks": [summarise(agent, practice[i:i + size], gamma)
                                 for i in range(0, len(practice), size)]}))


if __name__ == "__main__":
    main()
