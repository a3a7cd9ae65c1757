"""`dojo learn` (the learner with an in-process actor, or with no actor for offline pre-training) and
`dojo eval` (a run's policy snapshot on an env). Flags are shorthands for train.yaml keys, which may also be
given as KEY=VALUE; the run folder is the one `dojo train` writes. Each ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from dojo import runs
from dojo.launch.config import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    learn = subparsers.add_parser(
        "learn", help="train an agent on an env in this process, or offline from a store",
        description="The learner with an actor in this process (online), or with none (--offline). The run "
                    "folder is resumed when it holds a run. Flags set train.yaml keys; KEY=VALUE sets any.")
    where = learn.add_mutually_exclusive_group()
    where.add_argument("--env", help="a gymnasium id (e.g. dojo/PickCube-v0, Pendulum-v1): env.kind=gym env.id=ID")
    where.add_argument("--sim", metavar="TASK", help="the twin's task: env.kind=sim task=TASK")
    learn.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help="gym.make keyword")
    learn.add_argument("--agent", help="a preset: serl (default), rlpd, sac, calql, iql, iql-sparse, fql, bc")
    learn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the agent (agent.<its file>.KEY)")
    learn.add_argument("--demos", "--data", dest="demos", metavar="STORE",
                       help="offline data: demos mixed into online batches, or what --offline trains on")
    learn.add_argument("--offline", action="store_true", help="pre-train on --data without acting: --steps updates")
    learn.add_argument("--init", metavar="CKPT|RUN", help="start from a checkpoint (offline-to-online fine-tuning)")
    learn.add_argument("--steps", type=int, required=True, help="env steps (online) or updates (--offline)")
    learn.add_argument("--out", required=True, metavar="RUN", help="run folder")
    learn.add_argument("--seed", type=int)
    learn.add_argument("--demo-ratio", type=float, help="demo share of online batches (0: WSRL, online data only)")
    learn.add_argument("--learning-starts", "--warmup", dest="learning_starts", type=int,
                       help="online env steps before the first update; after --init, WSRL's frozen-policy warm-up")
    learn.add_argument("--random-steps", type=int, help="uniform random actions for the first steps")
    learn.add_argument("--eval-every", type=int, default=5000,
                       help="evaluate every N env steps (updates offline); the final policy always (0: never)")
    learn.add_argument("--eval-episodes", type=int, default=10)
    learn.add_argument("--success-key", help="info key of success (default 'success')")
    learn.add_argument("--no-progress", action="store_true")
    learn.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="train.yaml keys")
    learn.set_defaults(func=_learn)

    ev = subparsers.add_parser("eval", help="success rate and return of a run's policy snapshot on an env")
    ev.add_argument("--run", required=True, help="run folder holding policy.msgpack (or a `dojo steer` run)")
    where = ev.add_mutually_exclusive_group()
    where.add_argument("--env", help="a gymnasium id (default: the run's own env)")
    where.add_argument("--sim", metavar="TASK", help="the twin's task (default: the run's own env)")
    where.add_argument("--robot", metavar="FILE", help="a station (robot config file, e.g. twin): its devices")
    ev.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--success-key", help="info key of success (default: the run's, or 'success')")
    ev.add_argument("--episodes", type=int, default=50)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=_eval)


def _env_overrides(args) -> list[str]:
    out = []
    if args.env:
        out += ["env.kind=gym", f"env.id={args.env}"]
    if args.sim:
        out += ["env.kind=sim", f"task={args.sim}"]
    for item in args.env_arg:
        if "=" not in item:
            raise ConfigError(f"--env-arg must look like KEY=VALUE, got {item!r}")
        out.append(f"env.kwargs.{item}")
    if args.success_key:
        out.append(f"env.success_key={args.success_key}")
    return out


def learn_config(args: argparse.Namespace):
    """The run's checked config: RUN/config.yaml when resuming (else train.yaml), the flags, then KEY=VALUE."""
    from dojo.launch.cmd_train import train_config

    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    run = Path(args.out)
    o = _env_overrides(args)
    if args.offline:
        if not args.demos and not (run / runs.CONFIG).exists():
            raise ConfigError("--offline needs --data STORE")
        o += [f"learner.offline_updates={args.steps}", "learner.env_steps=0"]
        o += [] if args.env or args.sim else ["env.kind=none"]  # the store says what observations are
    else:
        o += [f"learner.env_steps={args.steps}"]
    named = {"demos.store": args.demos, "agent.init": args.init, "agent.name": args.agent, "seed": args.seed,
             "learner.demo_ratio": args.demo_ratio, "learner.start_after_steps": args.learning_starts,
             "actor.random_steps": args.random_steps, "learner.eval_every": args.eval_every,
             "learner.eval_episodes": args.eval_episodes}
    o += [f"{k}={v}" for k, v in named.items() if v is not None]
    o += ["reward.serve=actor"]  # its actor is in the learner's process: a reward model scores there
    cfg = train_config(o + list(args.overrides), run)
    if cfg.reward.serve == "learner":
        raise ConfigError("reward.serve=learner: dojo learn scores rewards in its own process; the reward service "
                          "is for actors over the link (dojo train, or dojo learner + dojo actor)")
    if args.set:  # agent options go to the section of the agent file in use
        cfg = train_config(o + [f"agent.{_agent_file(cfg)}.{item}" for item in args.set] + list(args.overrides), run)
    return cfg


def _agent_file(cfg) -> str:
    from dojo.learners import preset_agent
    from dojo.learners.checkpoint import read_checkpoint

    if cfg.agent.init:
        return read_checkpoint(str(runs.checkpoint_path(cfg.agent.init)))[0]["agent"]
    try:
        return preset_agent(cfg.agent.name)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _learn(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from dojo.launch.build import actor_config, check_learner_inputs, eval_config, make_env, make_operator, run_spaces
    from dojo.launch.cmd_train import progress_display, setup_logging
    from dojo.learners.learner import Learner
    from dojo.robot.actor import Actor

    cfg = learn_config(args)
    run = Path(args.out)
    online = cfg.learner.env_steps > 0
    env = make_env(cfg) if cfg.env.kind != "none" else None
    obs_space, action_space = (env.observation_space, env.action_space) if env is not None else run_spaces(cfg)
    check_learner_inputs(cfg, obs_space, action_space)
    lock = runs.RunLock(run)
    setup_logging()
    logging.getLogger("dojo.actor").setLevel(logging.WARNING)  # per-episode lines: the progress bar says it
    eval_env = None
    try:
        OmegaConf.save(cfg, run / runs.CONFIG)
        eval_env = make_env(eval_config(cfg)) if env is not None and cfg.learner.eval_every else None
        learner = Learner(run, cfg, obs_space, action_space, serve=False, eval_env=eval_env)
        actor = None
        if online:
            if cfg.intervention.operator != "none":
                env.unwrapped.teleop = make_operator(cfg, env)
            actor = Actor(env, learner.journals[cfg.learner.actors[0]], actor_config(cfg),
                          policy=learner.live_policy)
        total, unit = (cfg.learner.env_steps, "step") if online else (cfg.learner.offline_updates, "update")
        show, close = (None, lambda: None) if args.no_progress else progress_display(total, "learn", unit)
        try:
            record = learner.run_until_done(actor=actor, progress=show)
        finally:
            close()
    finally:
        for e in (env, eval_env):
            if e is not None:
                e.close()
        lock.release()
    print(json.dumps({"run": str(run), "env_steps": record["env_steps"], "updates": record["updates"],
                      "success_rate": record.get("eval_success_rate"), "return_mean": record.get("eval_return_mean"),
                      "train_success_rate": record["success_rate"], "wall_s": record["wall_s"]}))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from dojo.launch.build import eval_config, make_env
    from dojo.launch.cmd_train import train_config
    from dojo.policies.evaluation import evaluate_run

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    from dojo.launch.cmd_steer import STEER, evaluate_steered

    run = Path(args.run)
    steered = (run / STEER).is_file()  # a `dojo steer` run: its generalist steered by its critic
    if not ((run / runs.SNAPSHOT).is_file() or steered):
        raise FileNotFoundError(f"run {args.run!r} has no {runs.SNAPSHOT} (nor a `dojo steer` {STEER})")
    if not (args.env or args.sim or args.robot or (run / runs.CONFIG).exists()):
        raise ConfigError(f"run {args.run!r} has no {runs.CONFIG}: give --env ID, --sim TASK or --robot FILE")
    env = make_env(eval_config(train_config(_env_overrides(args), run if (run / runs.CONFIG).exists() else None,
                                            robot=args.robot)))
    try:
        result = (evaluate_steered if steered else evaluate_run)(run, env, args.episodes, seed=args.seed)
    finally:
        env.close()
    print(json.dumps(result))
    return 0
