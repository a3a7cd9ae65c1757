"""`dojo record`: record episodes from the twin (scripted expert, random policy or a teleop device) into a store."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dojo.robot.interfaces import WallClock

POLICIES = ("expert", "random")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("record", help="record episodes into a replay store",
                              description="Record episodes from the MuJoCo twin into a Zarr replay store. With "
                                          "--teleop a device drives the arm and its buttons end (success/fail), "
                                          "re-record or discard each episode.")
    p.add_argument("--sim", required=True, metavar="TASK", help="twin task: reach, pick_cube or peg_insert")
    p.add_argument("--policy", choices=POLICIES, default="expert", help="who acts when no --teleop is given")
    p.add_argument("--teleop", choices=("spacemouse", "gamepad", "keyboard", "sim-operator"), default=None,
                   help="record from a teleop device instead of --policy")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", required=True, metavar="STORE", help="store path (created, or appended to)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--obs-mode", choices=("state", "pixels", "both"), default="state")
    p.add_argument("--image-size", type=int, default=128, help="camera image side in pixels")
    p.add_argument("--max-episode-steps", type=int, default=100)
    p.add_argument("--source", choices=("demo", "online", "intervention", "prior"), default="demo")
    p.add_argument("--operator", default="", help="who recorded (stored in the episode metadata)")
    p.set_defaults(func=run)


def record(env, writer, episodes: int, *, act=None, teleop=None, seed: int = 0, source: str = "demo",
           operator: str = "", robot: str = "sim-twin", pace: bool = False, progress=None) -> dict:
    """Record `episodes` kept episodes; with a teleop device its buttons end, re-record or discard them.

    Re-record repeats the same reset seed; discard moves on to the next. Neither counts towards `episodes`.
    """
    kept, successes, steps, attempt, dropped = 0, 0, 0, 0, 0
    clock = WallClock()
    while kept < episodes:
        obs, info = env.reset(seed=seed + attempt)
        getattr(teleop, "reset", lambda: None)()
        writer.begin_episode(source=source, task=env.task.name, instruction=env.task.instruction,
                             operator=operator, robot=robot, reset_seed=seed + attempt)
        ending, episode_steps = None, 0
        while ending is None:
            if teleop is not None:
                cmd = teleop.read()
                if cmd.estop:
                    env.estop.trigger("teleop e-stop button")
                for button in ("discard", "rerecord", "success", "fail"):
                    if getattr(cmd, button):
                        ending = button
                        break
                if ending is not None:
                    break
                action = env.teleop_to_action(cmd)
            else:
                action = act(obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            writer.add_step(obs, info["executed_action"], reward, terminated, truncated, info=info)
            obs, episode_steps = next_obs, episode_steps + 1
            if terminated or truncated:
                ending = "estop" if info["estop"] else "done"
            if pace:
                clock.wait(env.period_s)
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
    from dojo.sim import make_env
    from dojo.sim.experts import make_expert

    if args.episodes <= 0:
        raise ValueError(f"--episodes must be a positive number, got {args.episodes}")
    env = make_env(args.sim, obs_mode=args.obs_mode, image_size=(args.image_size, args.image_size),
                   max_episode_steps=args.max_episode_steps, seed=args.seed)
    teleop, act = None, None
    if args.teleop is not None:
        from dojo.robot.teleop import make_teleop

        teleop = make_teleop(args.teleop, **({"env": env} if args.teleop == "sim-operator" else {}))
        operator = args.operator or args.teleop
    elif args.policy == "expert":
        act, operator = make_expert(env), args.operator or "scripted-expert"
    else:
        rng = np.random.default_rng(args.seed)
        act, operator = (lambda obs: rng.uniform(-1, 1, env.action_space.shape)), args.operator or "random"
    writer = EpisodeWriter(args.out)
    progress = tqdm(total=args.episodes, desc=f"record {args.sim}", unit="ep", file=sys.stderr,
                    disable=not sys.stderr.isatty())
    try:
        result = record(env, writer, args.episodes, act=act, teleop=teleop, seed=args.seed, source=args.source,
                        operator=operator, pace=teleop is not None and args.teleop != "sim-operator",
                        progress=progress)
    finally:
        progress.close()
        writer.close()
        if teleop is not None:
            teleop.close()
        env.close()
    print(json.dumps({"store": str(args.out), "task": args.sim, **result}))
    return 0
