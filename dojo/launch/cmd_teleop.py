"""`dojo teleop`: drive the twin (or an arm) from a teleop device without recording, showing live state.

The device's twist always drives (the intervene button only shows on the status line); success, fail,
re-record and discard end the episode and start the next one. Ctrl-C exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dojo.robot.interfaces import TeleopCommand, WallClock

DEVICES = ("keyboard", "spacemouse", "gamepad", "sim-operator")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("teleop", help="drive the twin or an arm from a teleop device (no recording)",
                                   description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", metavar="TASK", help="drive the MuJoCo twin on this task (reach, pick_cube, peg_insert)")
    where.add_argument("--robot", metavar="FILE", help="drive a station (a robot config file, e.g. twin); its own "
                                                       "teleop device unless --device is given")
    parser.add_argument("--device", choices=DEVICES, default=None, help="default: keyboard (--sim), the station's")
    parser.add_argument("--frame", choices=("base", "ee"), default=None,
                        help="frame of the device twist (default: the device's default, base)")
    parser.add_argument("--action-dim", type=int, choices=(4, 7), default=7,
                        help="4: translation + gripper; 7: also rotation (--sim; a station has its own)")
    parser.add_argument("--control-hz", type=float, default=10.0, help="(--sim; a station has its own)")
    parser.add_argument("--episode-steps", type=int, default=1000, help="steps before the episode restarts")
    parser.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: until Ctrl-C)")
    parser.add_argument("--fast", action="store_true", help="do not pace the twin at wall-clock rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="device option, e.g. --opt deadzone=0.15 --opt scale=0.5 (YAML values)")
    parser.set_defaults(func=run)


def make_driven_env(args, default_device: str):
    """(env, teleop device name) for a command that drives an arm itself: the twin's task (--sim) or a
    station's devices (--robot), which then brings its own teleop device unless --device names one."""
    if args.robot:
        from dojo.robot.factory import make_robot_env
        from dojo.robot.station import load_station

        station, _ = load_station(args.robot, [f"task.max_episode_steps={args.episode_steps}"]
                                  if getattr(args, "episode_steps", None) else [])
        device = args.device or station.teleop.device
        return make_robot_env(station, with_teleop=False), device
    from dojo.sim import make_env

    env = make_env(args.sim, action_dim=args.action_dim, control_hz=args.control_hz,
                   max_episode_steps=args.episode_steps, seed=args.seed)
    return env, args.device or default_device


def parse_options(items: list[str]) -> dict:
    from omegaconf import OmegaConf

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt must look like key=value, got {item!r}")
        options[key] = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
    return options


def status_line(step: int, episode: int, state, cmd: TeleopCommand, info: dict) -> str:
    buttons = [name for name in ("intervene", "success", "fail", "rerecord", "discard", "estop") if getattr(cmd, name)]
    x, y, z = state.ee_pos_m
    return (f"ep {episode} step {step:4d} | ee [{x:+.3f} {y:+.3f} {z:+.3f}] m | gripper {state.gripper_width_m:.3f} m "
            f"| twist [{' '.join(f'{v:+.1f}' for v in cmd.twist)}] {cmd.frame} | "
            f"{'SUCCESS ' if info.get('success') else ''}buttons: {' '.join(buttons) or '-'}")


def run(args: argparse.Namespace) -> int:
    from dojo.robot.teleop import make_teleop

    if args.steps < 0 or args.episode_steps <= 0:
        raise ValueError(f"--steps must be >= 0 and --episode-steps > 0, got {args.steps} and {args.episode_steps}")
    env, device = make_driven_env(args, "keyboard")
    options = parse_options(args.opt)
    if args.frame is not None:
        options["frame"] = args.frame
    if device == "sim-operator":
        options["env"] = env
    try:
        teleop = make_teleop(device, **options)
    except RuntimeError as err:  # no device plugged in, or its vendor module missing: say so, no traceback
        env.close()
        print(f"dojo teleop: error: {err}", file=sys.stderr)
        return 2
    # The device drives every step, so it is read here and not attached to the env (which would read
    # it a second time and swallow one-shot button presses).
    pace, steps, episode, successes = WallClock(), 0, 0, 0
    out = sys.stdout
    try:
        env.reset(seed=args.seed)
        episode_step = 0
        while args.steps == 0 or steps < args.steps:
            cmd = teleop.read()
            if cmd.estop:
                env.estop.trigger("teleop e-stop button")
            _, _, terminated, truncated, info = env.step(env.teleop_to_action(cmd))
            steps, episode_step = steps + 1, episode_step + 1
            out.write("\r" + status_line(episode_step, episode, env.arm.state(), cmd, info) + "\x1b[K")
            out.flush()
            if info["estop"]:
                out.write(f"\ne-stop: {env.estop.reason}; stopped\n")
                break
            if terminated or truncated or cmd.success or cmd.fail or cmd.rerecord or cmd.discard:
                successes += bool(info["success"])
                episode, episode_step = episode + 1, 0
                env.reset()
                getattr(teleop, "reset", lambda: None)()  # sim operators forget the last episode
            if not args.fast:
                pace.wait(env.period_s)
    except KeyboardInterrupt:
        pass
    finally:
        final_ee_pos_m = np.round(env.arm.state().ee_pos_m, 4).tolist()
        teleop.close()
        env.close()
    out.write("\n" + json.dumps({"steps": steps, "episodes_finished": episode, "successes": successes,
                                 "final_ee_pos_m": final_ee_pos_m}) + "\n")
    return 0
