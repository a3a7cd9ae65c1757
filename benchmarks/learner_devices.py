"""Learner updates/s with the batch split over 1 and N forced CPU devices (`learner.devices`): the data-parallel
path of dojo.learners.devices, state RLPD (E=10, UTD 20, batch 256). On a CPU the devices share the cores, so
this shows the cost of the split, not a speed-up; on a GPU machine run it with real devices (--real).

Run: .venv/bin/python benchmarks/learner_devices.py [--devices 2] [--calls 20] [--real]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys
import jax, numpy as np
from gymnasium import spaces
sys.path.insert(0, "benchmarks")
from learner_speed import make_batch, time_updates
from dojo.learners import make_agent
from dojo.learners.devices import DataParallel
from dojo.policies.spaces import ActionScale, ObsSpec

count, calls = int(sys.argv[1]), int(sys.argv[2])
parallel = DataParallel(count)
agent = parallel.agent(make_agent("rlpd", ObsSpec(32), ActionScale((-1.0,) * 4, (1.0,) * 4), seed=0))
space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (32,), np.float32)})
batch = make_batch(np.random.default_rng(0), agent.config.batch_size * agent.config.utd_ratio, space)
_, seconds = time_updates(agent, parallel.batch(batch), calls)
print(json.dumps({"devices": count, "platform": jax.local_devices()[0].platform, "updates_per_s": round(1 / seconds, 2)}))
"""


def run(count: int, calls: int, forced: int | None) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")}  # learner_speed's CPU default off
    if forced:
        env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={forced}")
    out = subprocess.run([sys.executable, "-c", CHILD, str(count), str(calls)], capture_output=True, text=True, env=env,
                         cwd=os.path.join(os.path.dirname(__file__), ".."))
    if out.returncode != 0:
        raise RuntimeError(f"the {count}-device run failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--real", action="store_true", help="use the machine's own devices (GPUs), not forced CPU ones")
    args = p.parse_args()
    forced = None if args.real else args.devices
    one, many = run(1, args.calls, forced), run(args.devices, args.calls, forced)
    print(json.dumps({"benchmark": "learner_devices", "platform": one["platform"], "devices": args.devices,
                      "updates_per_s_1": one["updates_per_s"], f"updates_per_s_{args.devices}": many["updates_per_s"],
                      "ratio": round(many["updates_per_s"] / one["updates_per_s"], 3)}))


if __name__ == "__main__":
    main()
