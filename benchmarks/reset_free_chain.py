"""A frozen policy practising reset-free on the twin's task pair, with no learning: how far it gets on its own.

The real session (`dojo.robot.practice`, as `dojo practice` builds it, the twin's person answering at once) runs
--attempts attempts with the policy's mode; a person resets the scene after 5 failures in a row or a stuck scene.
Used to compare the policies a session starts from (e.g. `dojo learn --offline` on a session's demos) and ends with.

Run: .venv/bin/python benchmarks/reset_free_chain.py POLICY [--attempts 100] [--seed 0] [--set KEY=VALUE ...]
POLICY: a snapshot file or a run folder (its policy.msgpack), trained on the pair's state with the direction.
Prints one JSON line: attempts, human_resets, forward/backward successes, the cube's x range at the attempts' ends.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy", help="a policy snapshot, or a run folder holding policy.msgpack")
    p.add_argument("--attempts", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a session setting, e.g. practice.after_failure=retry (repeatable)")
    args = p.parse_args()
    if args.attempts < 1:
        p.error(f"--attempts must be >= 1, got {args.attempts}")

    from dojo import runs
    from dojo.launch.build import make_env
    from dojo.launch.cmd_train import train_config
    from dojo.policies.snapshot import Policy

    path = Path(args.policy)
    try:
        policy = Policy(str(path / runs.SNAPSHOT if path.is_dir() else path), seed=args.seed)
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    try:
        cfg = train_config(["task=cube_to_green", "practice.enabled=true", "practice.person_delay_s=0", *args.set])
    except ValueError as err:  # ConfigError: a key that is not there, a value out of range
        p.error(str(err))
    env = make_env(cfg)
    want, have = len(policy.snapshot.state_mean), env.observation_space["state"].shape[0]
    if want != have:
        env.close()
        p.error(f"{path} acts on a state of {want} values; the pair's session has {have} (a policy trained on a "
                "practice run or on its demos)")
    session, xs = env.env, []  # CanonicalEnv over the PracticeSession
    for attempt in range(args.attempts):
        obs, done = env.reset(seed=args.seed if attempt == 0 else None)[0], False
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy.act_normalized(obs))
            done = terminated or truncated
        xs.append(float(session.pair.cube_pos_m[0]))
    summary = session.summary()
    env.close()
    print(json.dumps({**summary, "cube_x_range_m": [round(min(xs), 3), round(max(xs), 3)], "policy": str(path)}))


if __name__ == "__main__":
    main()
