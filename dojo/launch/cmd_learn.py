"""`dojo learn` (online RL with env and learner in one process, or --offline pre-training from a store)
and `dojo eval` (success rate of a run's policy snapshot). Each ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def _key_values(items: list[str], what: str) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    learn = subparsers.add_parser("learn", help="train an agent online on an env, or offline from a store")
    learn.add_argument("--env", help="gymnasium env id (e.g. dojo/PickCube-v0); needed online, optional offline")
    learn.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help="gym.make keyword")
    learn.add_argument("--agent", default="rlpd",
                       help="rlpd, serl (RLPD's sampling with SERL's robot settings and a demo BC term: what learns "
                            "pick_cube fast), sac, calql, iql, fql or bc")
    learn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="agent config override")
    learn.add_argument("--demos", help="replay store of demonstrations mixed into online batches")
    learn.add_argument("--offline", action="store_true", help="pre-train from --data without an env loop")
    learn.add_argument("--data", help="replay store to pre-train on (--offline)")
    learn.add_argument("--init", help="checkpoint to start from (offline-to-online fine-tuning)")
    learn.add_argument("--store", help="also append online episodes to this durable replay store")
    learn.add_argument("--steps", type=int, required=True, help="env steps (online) or updates (offline)")
    learn.add_argument("--out", required=True, help="run directory for checkpoint, policy and metrics")
    learn.add_argument("--seed", type=int, default=0)
    learn.add_argument("--demo-ratio", type=float, help="demo share of each batch (default: the agent's)")
    learn.add_argument("--warmup", type=int, default=0, help="WSRL: steps of the frozen policy before updates")
    learn.add_argument("--learning-starts", type=int, help="env steps before the first update")
    learn.add_argument("--random-steps", type=int, help="uniform random actions at the start")
    learn.add_argument("--eval-every", type=int, default=5000)
    learn.add_argument("--eval-episodes", type=int, default=10)
    learn.add_argument("--checkpoint-every", type=int, default=10_000)
    learn.add_argument("--no-progress", action="store_true")
    learn.set_defaults(func=_learn)

    ev = subparsers.add_parser("eval", help="success rate of a run's policy snapshot on an env")
    ev.add_argument("--run", required=True, help="run directory holding policy.msgpack")
    ev.add_argument("--env", required=True)
    ev.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--episodes", type=int, default=50)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=_eval)


def _learn(args: argparse.Namespace) -> int:
    from dojo.learners import checkpoint, loop
    from dojo.replay.sampler import ReplayMirror

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    overrides = _key_values(args.set, "--set")
    env_kwargs = _key_values(args.env_arg, "--env-arg")
    env = loop.make_env(args.env, **env_kwargs) if args.env else None
    guided = bool(args.demos or args.init or args.offline)
    learning_starts = args.learning_starts if args.learning_starts is not None else (256 if guided else 1000)
    cfg = loop.LoopConfig(steps=args.steps, seed=args.seed, learning_starts=learning_starts,
                          random_steps=args.random_steps if args.random_steps is not None else (0 if guided else learning_starts),
                          warmup_steps=args.warmup, demo_ratio=args.demo_ratio, eval_every=args.eval_every,
                          eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
                          progress=not args.no_progress)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "run.json"), "w") as f:
        json.dump({k: v for k, v in vars(args).items() if k != "func"}, f, indent=1)

    if args.offline:
        if not args.data:
            raise ValueError("--offline needs --data STORE")
        mirror = ReplayMirror.from_store(args.data)
        if args.init:
            agent, _ = checkpoint.load_checkpoint(args.init, overrides)
        else:
            agent = loop.make_agent(args.agent, _spec_of(mirror, env), _action_space_of(mirror, env), args.seed,
                                    overrides)
        _, summary = loop.run_offline(agent, mirror, cfg, args.out, eval_env=env)
    else:
        if env is None:
            raise ValueError("online learning needs --env ENV_ID (or pass --offline --data STORE)")
        mirror = ReplayMirror.from_store(args.demos) if args.demos else ReplayMirror()
        if args.init:
            agent, _ = checkpoint.load_checkpoint(args.init, overrides)
        else:
            agent = loop.make_agent(args.agent, env.observation_space, env.action_space, args.seed, overrides)
        writer = None
        if args.store:
            from dojo.replay.store import EpisodeWriter
            writer = EpisodeWriter(args.store)
        try:
            _, summary = loop.run_online(env, agent, mirror, cfg, args.out, writer=writer)
        finally:
            if writer is not None:
                writer.close()
    print(json.dumps(summary))
    return 0


def _spec_of(mirror, env):
    """The obs spec for offline training: the env's if given, else the store's state/camera keys."""
    if env is not None:
        return env.observation_space
    from dojo.policies.spaces import ObsSpec
    batch = mirror.sample(1, np.random.default_rng(0))
    cams = tuple((k, tuple(v.shape[1:])) for k, v in sorted(batch["obs"].items()) if k != "state")
    return ObsSpec(int(batch["obs"]["state"].shape[-1]), cams)


def _action_space_of(mirror, env):
    if env is not None:
        return env.action_space
    import gymnasium as gym
    dim = mirror.sample(1, np.random.default_rng(0))["action"].shape[-1]
    return gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)


def _eval(args: argparse.Namespace) -> int:
    from dojo.learners import loop  # evaluate_run acts through dojo.policies.Policy only

    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    if not os.path.isfile(os.path.join(args.run, "policy.msgpack")):
        raise FileNotFoundError(f"run {args.run!r} has no policy.msgpack")
    env = loop.make_env(args.env, **_key_values(args.env_arg, "--env-arg"))
    result = loop.evaluate_run(args.run, env, args.episodes, seed=args.seed)
    print(json.dumps({"episodes": args.episodes, **result}))
    return 0
