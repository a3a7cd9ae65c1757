"""Does practice success sag? `dojo train --sim pick_cube` for one seed and budget: the practice success over each
1k env steps of the run (the episodes that ended in it), its peak, the last 1k steps' success, and the final
deterministic evaluation.

Run: .venv/bin/python benchmarks/sag.py --seed S --out DIR [--env-steps 6000] [--set KEY=VALUE ...]
Prints one JSON line: windows (success per 1k steps), peak, last, sag (peak - last, points), final_success.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from practice import dojo  # noqa: E402

WINDOW_STEPS = 1000


def windows(run: Path, window: int = WINDOW_STEPS) -> list[float | None]:
    """Success rate of the practice episodes that ended in each `window` env steps of the run, counted back from
    its last step (so the last window is the last `window` steps, never a sliver past the budget)."""
    from dojo.learners.report import finished_episodes

    ends, successes, steps = [], [], 0
    for episode, _ in finished_episodes(run):
        steps += episode.num_steps
        ends.append(steps)
        successes.append(episode.success)
    out = []
    for hi in range(steps, 0, -window):
        mine = [s for end, s in zip(ends, successes) if hi - window < end <= hi]
        out.append(round(sum(mine) / len(mine), 3) if mine else None)
    return out[::-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--env-steps", type=int, default=6000)
    p.add_argument("--task", default="pick_cube")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    run = Path(args.out) / f"{args.task}-{args.env_steps}-seed{args.seed}"
    result, _ = dojo("train", "--sim", args.task, "--run", run, f"seed={args.seed}",
                     f"learner.env_steps={args.env_steps}", *args.set)
    rates = windows(run)
    full = [r for r in rates if r is not None]
    peak, last = max(full), full[-1]
    print(json.dumps({"task": args.task, "seed": args.seed, "env_steps": args.env_steps, "settings": args.set,
                      "windows": rates, "peak": peak, "last": last, "sag_points": round(100 * (peak - last), 1),
                      "final_success": result["success_rate"], "wall_s": result["wall_s"]}))


if __name__ == "__main__":
    main()
