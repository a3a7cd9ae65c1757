"""Env steps per second into one learner from N actors: `dojo train --sim TASK actors.count=N
actors.backend=local|ray`, the actors unpaced (the twin without a wall clock, never waiting for the learner), a small agent.
The rate is taken from the learner's progress between its first and last records with steps, so start-up (the
learner's compile, Ray's start, the actors' imports) is left out. Run each backend in the same session to
compare: the machine is shared.

Run: .venv/bin/python benchmarks/fleet_speed.py --actors 2 --backend ray [--steps 4000] [--task reach]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dojo import runs


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--steps", type=int, default=4000, help="env steps in all")
    p.add_argument("--task", default="reach")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "dojo.launch.cli", "train", "--sim", args.task, "--run", str(run),
                        f"actors.count={args.actors}", f"actors.backend={args.backend}",
                        f"learner.env_steps={args.steps}", "actor.max_lead_steps=0",
                        "agent.sac.hidden_dims=[32,32]", "agent.sac.batch_size=32", "learner.log_every_s=0.5",
                        "demos.episodes=2", "eval.episodes=0", "actor.random_steps=1000000"],
                       check=True, capture_output=True, text=True)
        wall_s = time.monotonic() - started
        rows = [r for r in runs.read_progress(run) if r.get("env_steps", 0) > 0]
    first, last = rows[0], rows[-1]
    rate = (last["env_steps"] - first["env_steps"]) / max(last["wall_s"] - first["wall_s"], 1e-9)
    result = {"benchmark": "fleet_speed", "task": args.task, "actors": args.actors, "backend": args.backend,
              "env_steps": last["env_steps"], "env_steps_per_s": round(rate, 1), "command_wall_s": round(wall_s, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
