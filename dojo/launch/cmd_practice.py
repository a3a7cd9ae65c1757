"""`dojo practice`: a reset-free practice session on the twin's task pair (dojo.robot.practice), with its report."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from dojo import runs
from dojo.launch.config import ConfigError

RESTARTS = 100  # a SIGKILLed learner or actor is started again (and resumes) up to this many times each


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "practice", help="a reset-free practice session: forward and backward attempts in turns on the twin",
        description="Records demos of both directions with the scripted expert (unless demos.store is given), then "
                    "runs a learner and an actor over loopback: the actor's attempts alternate between the pair's "
                    "forward and backward task with no reset in between, and a person (the twin's simulated one) "
                    "resets the scene only after practice.max_failures failed attempts in a row or when the scene "
                    "is stuck. One agent learns both directions (the direction is part of its state; the "
                    "serl-practice preset unless agent.name says otherwise), pre-trained on the demos first "
                    "(learner.offline_updates: the preset's 3,000 updates that clone them); the actor practises "
                    "with the policy's mode (actor.noise_scale=0; 1 samples the policy). A learner "
                    "or actor that is killed is started again and resumes; `dojo practice --run RUN` resumes a "
                    "stopped session. Ends with RUN/practice.png, sampled attempt videos in RUN/videos, TensorBoard "
                    "scalars and one JSON line.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", metavar="PAIR", help="the twin's task pair: cube_pads")
    where.add_argument("--robot", metavar="FILE",
                       help="a station (robot config file) with robot.task.reset.mode=policy and robot.task.backward "
                            "(the task that undoes its own); its person is the operator; demos.store must hold "
                            "teleop demos of both directions (or demos.episodes=0). No videos: a station's stored "
                            "camera frames are drawn by dojo replay video")
    p.add_argument("--run", default=None, help="run folder (default runs/PAIR-TIME); an existing one is resumed")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (launch/configs/train.yaml)")
    p.set_defaults(func=run_practice)


def run_practice(args: argparse.Namespace) -> int:
    from dojo.launch.cmd_train import train_config, train_on_twin
    from dojo.learners.report import practice_report
    from dojo.sim.task_pair import PAIRS, TASKS

    if args.sim is not None and args.sim not in PAIRS:
        raise ConfigError(f"--sim must name a reset-free task pair, one of {sorted(PAIRS)}; got {args.sim!r}")
    # The robot practises with the policy's mode unless told otherwise: on the twin's pair the sampled actions
    # fail where the mode succeeds; and with the serl-practice preset, whose actor moves off a repeated failure
    # faster than serl's (benchmarks/results/README.md, reset-free practice).
    # A resumed session keeps what its saved config says (these defaults may have been overridden at its start).
    resumed = args.run is not None and (Path(args.run) / runs.CONFIG).is_file()
    defaults = [] if resumed else ["practice.enabled=true", "actor.noise_scale=0.0", "agent.name=serl-practice"]
    if not resumed:
        task = [f"task={PAIRS[args.sim]}"] if args.sim else []
        defaults += clone_first(train_config([*task, *defaults, *args.overrides], robot=args.robot))
    name = args.sim or Path(args.robot).stem
    cfg, run, started = train_on_twin(name, PAIRS.get(args.sim), args.run, [*defaults, *args.overrides],
                                      restarts=RESTARTS, command="practice", robot=args.robot)
    if args.sim:
        names = TASKS[PAIRS[args.sim]].direction_names
    else:  # as the station's task names its directions: the twin pair's own, else the station file's
        task = cfg.robot.task
        names = (TASKS[task.name].direction_names if task.name in TASKS
                 else {"forward": task.name, "backward": task.backward.name})
    report = practice_report(run, names)
    videos = render_attempts(cfg, run, int(cfg.practice.videos)) if args.sim else []
    print(json.dumps({"pair": args.sim, "robot": args.robot, "run": str(run), **report, "videos": videos,
                      "wall_s": round(time.monotonic() - started, 1)}))
    return 0


def clone_first(cfg) -> list[str]:
    """The session's offline phase: an agent whose actor clones the demos for its first updates (serl-practice's
    `bc_only_updates`) runs them before the first attempt (learner.offline_updates), so the first attempts do what
    the demos do instead of failing for thousands of online updates while every 5 failures cost a person's reset
    (benchmarks/results/README.md, reset-free practice). With no demos to clone, none."""
    from dojo.learners import agent_config, preset_agent
    from dojo.learners.learner import agent_overrides

    agent_file = preset_agent(cfg.agent.name)
    updates = getattr(agent_config(cfg.agent.name, agent_overrides(cfg, agent_file))[1], "bc_only_updates", 0)
    if not updates:
        return []
    has_demos = bool(cfg.demos.store) or cfg.demos.episodes > 0
    return [f"learner.offline_updates={updates}" if has_demos else f"agent.{agent_file}.bc_only_updates=0"]


def render_attempts(cfg, run: Path, count: int) -> list[str]:
    """RUN/videos/<actor>-attempt<N>.mp4 for `count` attempts drawn evenly over the session, drawn by `dojo replay
    video` from the twin's replay of each (`replay_attempt`) with its cameras on."""
    from dojo.learners.report import finished_episodes
    from dojo.replay.store import EpisodeWriter, StoreReader
    from dojo.replay.video import write_video
    from dojo.sim import make_env

    attempts = finished_episodes(run)
    if count <= 0 or not attempts:
        return []
    picks = sorted({int(i) for i in np.linspace(0, len(attempts) - 1, count)})
    out_dir = Path(run) / "videos"
    out_dir.mkdir(exist_ok=True)
    size = int(cfg.env.image_size)
    env = make_env(cfg.task, obs_mode="both", image_size=(size, size), control_hz=cfg.env.control_hz,
                   action_dim=cfg.env.action_dim, max_episode_steps=cfg.env.max_episode_steps)
    readers = {p: StoreReader(p) for p in sorted((Path(run) / "replay").glob("*.zarr"))}
    written = []
    try:
        for i in picks:
            info = attempts[i][0]
            store, reader = next((p, r) for p, r in readers.items() if info in r.episodes)
            out = out_dir / f"{store.stem}-attempt{info.index}.mp4"
            with tempfile.TemporaryDirectory() as tmp:
                with EpisodeWriter(Path(tmp) / "attempt.zarr") as writer:
                    writer.begin_episode(source="online", task=info.task, reset=info.reset)
                    for obs, action, reward, terminated, truncated, step in replay_attempt(env, reader, info.index):
                        writer.add_step(obs, action, reward, terminated, truncated, info=step)
                    writer.end_episode(step["next_obs"], success=bool(step["success"]))
                write_video(Path(tmp) / "attempt.zarr", 0, out)
            written.append(str(out))
    finally:
        env.close()
    return written


def replay_attempt(env, reader, index: int):
    """The twin's replay of attempt `index` of a practice store: a reset-free attempt begins where the one before it
    ended, so the chain of attempts since the last full reset is re-executed (that reset's seed, then every stored
    action; the twin is deterministic). Yields (obs, action, reward, terminated, truncated, info) of the attempt's
    steps; the last info also holds "next_obs". The attempts before it are replayed without reading the cameras:
    the chain since a person's reset can be hundreds of attempts long."""
    direction_of = {name: d for d, name in env.task.direction_names.items()}
    start = max(e.index for e in reader.episodes[:index + 1] if e.reset != "free")
    try:
        for ep in reader.read_episodes(start, index + 1, obs_keys=("state",)):
            env.read_cameras = ep.info.index == index
            if ep.info.index == start:
                env.task.set_direction(direction_of[ep.info.task])
                obs, _ = env.reset(seed=ep.info.reset_seed)
            else:
                env.task.begin_attempt(direction_of[ep.info.task])
                obs, _ = env.reset()
            for t in range(ep.info.num_steps):
                next_obs, reward, terminated, truncated, info = env.step(ep.action[t])
                if ep.info.index == index:
                    yield obs, ep.action[t], reward, terminated, truncated, {**info, "next_obs": next_obs}
                obs = next_obs
    finally:
        env.read_cameras = True
