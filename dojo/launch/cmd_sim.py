"""`dojo sim run`: run episodes of a twin task with the scripted expert or a random policy and report success."""

from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

POLICIES = ("expert", "random")


def add_parser(subparsers) -> None:
    sim = subparsers.add_parser("sim", help="run the MuJoCo twin")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")
    run = sim_commands.add_parser("run", help="run episodes and print one JSON line of results",
                                  description=__doc__.splitlines()[0])
    run.add_argument("--task", default="pick_cube", help="reach, pick_cube or peg_insert")
    run.add_argument("--policy", default="expert", choices=POLICIES)
    run.add_argument("--episodes", type=int, default=20)
    run.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    run.add_argument("--obs-mode", default="state", choices=("state", "pixels", "both"))
    run.add_argument("--action-dim", type=int, default=4, choices=(4, 7))
    run.add_argument("--randomize", action="store_true", help="randomise lighting, colours and camera poses")
    run.set_defaults(func=run_episodes)


def run_episodes(args: argparse.Namespace) -> int:
    from dojo.sim import make_env
    from dojo.sim.experts import make_expert

    if args.episodes <= 0:
        raise ValueError(f"--episodes must be a positive integer, got {args.episodes}")
    env = make_env(args.task, obs_mode=args.obs_mode, action_dim=args.action_dim, randomize=args.randomize)
    env.action_space.seed(args.seed)
    policy = make_expert(env) if args.policy == "expert" else (lambda obs: env.action_space.sample())
    successes, steps = 0, 0
    progress = tqdm(range(args.episodes), desc=f"{args.task} ({args.policy})", unit="episode", file=sys.stderr)
    for episode in progress:
        obs, info = env.reset(seed=args.seed + episode)
        terminated = truncated = False
        while not (terminated or truncated):
            obs, _, terminated, truncated, info = env.step(policy(obs))
            steps += 1
        successes += bool(info["success"])
        progress.set_postfix(success_rate=f"{successes / (episode + 1):.2f}")
    env.close()
    print(json.dumps({"task": args.task, "episodes": args.episodes, "success_rate": successes / args.episodes,
                      "mean_steps": steps / args.episodes}))
    return 0
