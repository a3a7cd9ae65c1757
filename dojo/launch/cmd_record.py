"""`dojo record`: record episodes from the twin (scripted expert, random policy or a teleop device) into a store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dojo.robot.interfaces import WallClock

POLICIES = ("expert", "random")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("record", help="record episodes into a replay store",
                              description="Record episodes from the MuJoCo twin into a Zarr replay store. With "
                                          "--teleop a device drives the arm and its buttons end (success/fail), "
                                          "re-record or discard each episode.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", metavar="TASK", help="twin task: reach, pick_cube or peg_insert")
    where.add_argument("--robot", metavar="FILE", help="a station (robot config file, e.g. twin): its devices, its "
                                                       "teleop device unless --teleop is given")
    p.add_argument("--policy", choices=POLICIES, default="expert", help="who acts when no teleop device is given "
                                                                        "(expert: the twin's scripted expert)")
    p.add_argument("--teleop", choices=("spacemouse", "gamepad", "keyboard", "sim-operator"), default=None,
                   help="record from a teleop device instead of --policy")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", required=True, metavar="STORE", help="store path (created, or appended to)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--obs-mode", choices=("state", "pixels", "both"), default="state", help="(--sim)")
    p.add_argument("--image-size", type=int, default=128, help="camera image side in pixels (--sim)")
    p.add_argument("--max-episode-steps", type=int, default=100, help="(--sim; a station has its own)")
    p.add_argument("--source", choices=("demo", "online", "intervention", "prior"), default="demo")
    p.add_argument("--operator", default="", help="who recorded (stored in the episode metadata)")
    p.add_argument("--workers", type=int, default=1, help="record with this many processes side by side (the twin's "
                                                          "experts or random policy), then gather their episodes")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="with --workers: local processes, or Ray tasks (a local Ray, or the cluster at RAY_ADDRESS)")
    p.set_defaults(func=run)


def record(env, writer, episodes: int, *, act=None, teleop=None, seed: int = 0, source: str = "demo",
           operator: str = "", robot: str = "sim-twin", pace: bool = False, progress=None) -> dict:
    """Record `episodes` kept episodes; with a teleop device its buttons end, re-record or discard them.

    Re-record repeats the same reset seed; discard moves on to the next. Neither counts towards `episodes`.
    """
    kept, successes, steps, attempt, dropped = 0, 0, 0, 0, 0
    clock = WallClock()
    robot_env = env.unwrapped  # `env` may be a wrapper (a practice session's)
    while kept < episodes:
        obs, info = env.reset(seed=seed + attempt)
        getattr(teleop, "reset", lambda: None)()
        writer.begin_episode(source=source, task=robot_env.task.name, instruction=robot_env.task.instruction,
                             operator=operator, robot=robot, reset_seed=seed + attempt,
                             calibration_id=getattr(robot_env, "calibration_id", ""),
                             reward_source=getattr(robot_env.task, "reward_source", ""), reset=info.get("reset", ""))
        ending, episode_steps = None, 0
        while ending is None:
            if teleop is not None:
                cmd = teleop.read()
                if cmd.estop:
                    robot_env.estop.trigger("teleop e-stop button")
                for button in ("discard", "rerecord", "success", "fail"):
                    if getattr(cmd, button):
                        ending = button
                        break
                if ending is not None:
                    break
                action = robot_env.teleop_to_action(cmd)
            else:
                action = act(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            writer.add_step(obs, info["executed_action"], reward, terminated, truncated, info=info)
            obs, episode_steps = next_obs, episode_steps + 1
            if terminated or truncated:
                ending = "estop" if info["estop"] else "done"
            if pace:
                clock.wait(robot_env.period_s)
        if ending in ("discard", "rerecord") or episode_steps == 0:
            writer.discard_episode()
            dropped += 1
            attempt += ending != "rerecord"
            continue
        success = ending == "success" or (ending != "fail" and bool(info["success"]))
        writer.end_episode(obs, success=success)
        kept, successes, steps, attempt = kept + 1, successes + success, steps + episode_steps, attempt + 1
        if progress is not None:
            progress.update(1)
            progress.set_postfix(success=f"{successes}/{kept}")
        if ending == "estop":
            break
    return {"episodes": kept, "steps": steps, "success_rate": successes / max(kept, 1), "dropped": dropped}


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dojo.replay.store import EpisodeWriter

    if args.episodes <= 0:
        raise ValueError(f"--episodes must be a positive number, got {args.episodes}")
    if args.workers < 1:
        raise ValueError(f"--workers must be a positive number, got {args.workers}")
    if args.workers > 1:
        return record_fleet(args)
    if args.robot:
        from dojo.robot.factory import make_robot_env
        from dojo.robot.station import load_station

        station, _ = load_station(args.robot)
        env, robot, task = make_robot_env(station, with_teleop=False), station.name, station.task
        device = args.teleop or (station.teleop.device if station.teleop.device != "none" else None)
    else:
        from dojo.sim import make_env

        env = make_env(args.sim, obs_mode=args.obs_mode, image_size=(args.image_size, args.image_size),
                       max_episode_steps=args.max_episode_steps, seed=args.seed)
        device, robot, task = args.teleop, "sim-twin", None
    teleop, act = None, None
    if device is not None:
        from dojo.robot.teleop import make_teleop

        teleop = make_teleop(device, **({"env": env} if device == "sim-operator" else {}))
        operator = args.operator or device
    elif args.policy == "expert":
        from dojo.sim.experts import make_expert

        act, operator = make_expert(env), args.operator or "scripted-expert"
    else:
        rng = np.random.default_rng(args.seed)
        act, operator = (lambda obs: rng.uniform(-1, 1, env.action_space.shape)), args.operator or "random"
    writer = EpisodeWriter(args.out)
    name = task.name if task is not None else args.sim
    progress = tqdm(total=args.episodes, desc=f"record {name}", unit="ep", file=sys.stderr,
                    disable=not sys.stderr.isatty())
    try:
        result = record(env, writer, args.episodes, act=act, teleop=teleop, seed=args.seed, source=args.source,
                        operator=operator, robot=robot, progress=progress,
                        pace=teleop is not None and device != "sim-operator")
    finally:
        progress.close()
        writer.close()
        if teleop is not None:
            teleop.close()
        env.close()
    print(json.dumps({"store": str(args.out), "task": name, **result}))
    return 0


def record_fleet(args: argparse.Namespace) -> int:
    """`--workers N`: N `dojo record` processes (or Ray tasks), each its share of the episodes from its own
    reset seeds into OUT.workers/worker-<i>.zarr, then gathered into OUT in worker order."""
    import shutil

    from dojo.link.fleet import run_commands
    from dojo.replay.store import EpisodeWriter, append_episodes, open_store

    if args.teleop:
        raise ValueError("--workers records with the twin's experts or a random policy, not a teleop device "
                         f"(got --teleop {args.teleop})")
    n = min(args.workers, args.episodes)
    parts = Path(f"{args.out}.workers")
    parts.mkdir(parents=True, exist_ok=True)
    common = ["record", *(["--sim", args.sim] if args.sim else ["--robot", args.robot]), "--policy", args.policy,
              "--obs-mode", args.obs_mode, "--image-size", str(args.image_size), "--max-episode-steps",
              str(args.max_episode_steps), "--source", args.source, "--operator", args.operator]
    names, commands = [f"worker-{i}" for i in range(n)], []
    for i in range(n):
        share = args.episodes // n + (i < args.episodes % n)
        part = parts / f"worker-{i}.zarr"
        if part.exists():  # a failed earlier try: start this share again
            shutil.rmtree(part)
        commands.append(common + ["--episodes", str(share), "--seed", str(args.seed + i * 1_000_000),
                                  "--out", str(part.resolve())])
    run_commands(parts, commands, names, args.backend)
    with EpisodeWriter(args.out) as writer:
        for name in names:
            append_episodes(parts / f"{name}.zarr", writer)
    reader = open_store(args.out)
    shutil.rmtree(parts)
    successes = sum(ep.success for ep in reader.episodes[-args.episodes:])
    print(json.dumps({"store": str(args.out), "task": args.sim or args.robot, "episodes": args.episodes,
                      "steps": int(sum(ep.num_steps for ep in reader.episodes[-args.episodes:])),
                      "success_rate": successes / args.episodes, "workers": n, "backend": args.backend}))
    return 0
