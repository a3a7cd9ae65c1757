"""`dojo robot check --robot FILE`: connect every device of a station without moving the arm and say how each
is doing (arm state rate and staleness, each camera's fps, timestamps, frame age and exposure, the teleop
buttons seen, the pose against the workspace box, the calibration file's age). With `--jog` (and a yes) it
also moves the end-effector 1 cm along each axis and back, and measures the command-to-motion latency.
Ends with one JSON line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BUTTONS = ("intervene", "success", "fail", "rerecord", "discard", "estop")
JOG_M = 0.01
MOVED_M = 0.002  # the end-effector counts as moving once it is this far from where it was


def add_parser(subparsers) -> None:
    robot = subparsers.add_parser("robot", help="station tools: check the devices of a robot config")
    commands = robot.add_subparsers(dest="robot_command", required=True, metavar="COMMAND")
    p = commands.add_parser("check", help="connect every device without moving the arm and report on each",
                            description=__doc__)
    p.add_argument("--robot", required=True, metavar="FILE", help="the station's config file (or a shipped name)")
    p.add_argument("--seconds", type=float, default=2.0, help="how long to watch the devices")
    p.add_argument("--jog", action="store_true", help="also move 1 cm along each axis to measure the latency")
    p.add_argument("--yes", action="store_true", help="with --jog: do not ask before moving the arm")
    p.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    from dojo.robot.factory import make_robot_env
    from dojo.robot.station import load_station

    if not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds}")
    station, _ = load_station(args.robot)
    env = make_robot_env(station)
    try:
        env.arm.stop()  # hold wherever it is: a check never moves the arm on its own
        report = {"station": station.name, **watch(env, args.seconds), "calibration": calibration_age(station)}
        if args.jog:
            if not (args.yes or confirm(f"move {station.name}'s end-effector {JOG_M * 100:.0f} cm along x, y and z "
                                        "and back?")):
                raise ValueError("--jog needs a yes: answer y, or pass --yes")
            report["jog_latency_ms"] = jog(env)
    finally:
        env.close()
    print_table(report)
    print(json.dumps(report))
    return 0


def watch(env, seconds: float) -> dict:
    """Arm, cameras and teleop read at the control rate for `seconds` of the env's clock."""
    arm_stamps, stale_s, frames, ages, buttons = [], [], {n: [] for n in env.cameras}, {n: [] for n in env.cameras}, set()
    start = env.clock.now_s()
    while env.clock.now_s() - start < seconds:
        env.clock.wait(env.period_s)
        now = env.clock.now_s()
        state = env.arm.state()
        arm_stamps.append(state.timestamp_s)
        stale_s.append(now - state.timestamp_s)
        for name, camera in env.cameras.items():
            frame = camera.read()
            frames[name].append(frame.timestamp_s)
            ages[name].append(now - frame.timestamp_s)
        if env.teleop is not None:
            cmd = env.teleop.read()
            buttons.update(b for b in BUTTONS if getattr(cmd, b))
    elapsed = env.clock.now_s() - start
    box_lo, box_hi = env.safety.box_min_m, env.safety.box_max_m
    pos = env.arm.state().ee_pos_m
    outside = np.maximum(box_lo - pos, pos - box_hi)
    cameras = {}
    for name, stamps in frames.items():
        view = env.cameras[name]
        cameras[name] = {"shape": list(view.shape), "fps": round((len(set(stamps)) - 1) / elapsed, 1),
                         "timestamps_monotonic": bool(np.all(np.diff(stamps) >= 0)),
                         "frame_age_ms_mean": round(1000 * float(np.mean(ages[name])), 1),
                         "frame_age_ms_max": round(1000 * float(np.max(ages[name])), 1),
                         "exposure_us": getattr(view.camera, "exposure_us", None)}
    return {"arm": {"state_rate_hz": round((len(set(arm_stamps)) - 1) / elapsed, 1),
                    "staleness_ms_max": round(1000 * float(np.max(stale_s)), 1),
                    "ee_pos_m": np.round(pos, 4).tolist(), "inside_workspace": bool(np.all(outside <= 0)),
                    "outside_by_m": round(float(max(outside.max(), 0.0)), 4)},
            "cameras": cameras,
            "teleop": {"device": env.station.teleop.device, "buttons_seen": sorted(buttons)}}


def jog(env, timeout_s: float = 2.0) -> dict:
    """Per axis: the time from commanding a 1 cm step to the end-effector having moved 2 mm, on the env's
    clock, then back to where it was. Every target goes through the safety layer."""
    latencies = {}
    for axis, name in enumerate("xyz"):
        start = env.arm.state()
        target = start.ee_pos_m.copy()
        target[axis] += JOG_M
        pos, quat = env.safety.filter(start.ee_pos_m, start.ee_quat_wxyz, target, start.ee_quat_wxyz)
        sent = env.clock.now_s()
        env.arm.command(pos, quat, start.gripper_width_m)
        moved = None
        while env.clock.now_s() - sent < timeout_s:
            env.clock.wait(min(env.period_s, 0.004))
            if np.linalg.norm(env.arm.state().ee_pos_m - start.ee_pos_m) > MOVED_M:
                moved = env.clock.now_s() - sent
                break
        latencies[name] = None if moved is None else round(1000 * moved, 1)
        env.arm.command(start.ee_pos_m, start.ee_quat_wxyz, start.gripper_width_m)
        for _ in range(int(timeout_s / env.period_s)):
            env.clock.wait(env.period_s)
    return latencies


def calibration_age(station) -> dict:
    if not station.calibration:
        return {"file": None, "id": None, "age_days": None, "warning": "no calibration file: run dojo calibrate"}
    from dojo.calibration.file import load_calibration

    path = Path(station.calibration)
    if not path.is_file():
        return {"file": str(path), "id": None, "age_days": None, "warning": f"calibration file {path} does not exist"}
    calibration = load_calibration(path)
    age_days = calibration.age_days()
    old = age_days is not None and age_days > station.calibration_max_age_days
    return {"file": str(path), "id": calibration.id, "age_days": None if age_days is None else round(age_days, 1),
            "warning": f"older than {station.calibration_max_age_days} days: calibrate again" if old else None}


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def print_table(report: dict) -> None:
    arm = report["arm"]
    rows = [("arm", f"state {arm['state_rate_hz']} Hz, stale <= {arm['staleness_ms_max']} ms, ee {arm['ee_pos_m']} m "
                    + ("inside the workspace box" if arm["inside_workspace"]
                       else f"OUTSIDE the workspace box by {arm['outside_by_m']} m"))]
    for name, cam in report["cameras"].items():
        rows.append((f"camera {name}", f"{cam['shape'][0]}x{cam['shape'][1]}, {cam['fps']} fps, age "
                                       f"{cam['frame_age_ms_mean']} ms (max {cam['frame_age_ms_max']}), timestamps "
                                       f"{'monotonic' if cam['timestamps_monotonic'] else 'NOT MONOTONIC'}, exposure "
                                       f"{cam['exposure_us'] if cam['exposure_us'] is not None else 'auto/unknown'}"))
    teleop = report["teleop"]
    rows.append(("teleop", f"{teleop['device']}, buttons seen: {', '.join(teleop['buttons_seen']) or 'none'}"))
    cal = report["calibration"]
    rows.append(("calibration", f"{cal['file'] or '-'}, age {cal['age_days']} days"
                 + (f" ({cal['warning']})" if cal["warning"] else "")))
    if "jog_latency_ms" in report:
        rows.append(("jog latency", ", ".join(f"{k} {v} ms" for k, v in report["jog_latency_ms"].items())))
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}", file=sys.stderr)
