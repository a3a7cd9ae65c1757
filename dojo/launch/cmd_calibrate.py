"""`dojo calibrate board|intrinsics|handeye|workspace|latency --robot FILE`: a station's calibration, each
written into its calibration file (the station's `calibration`, or --out). A camera's `mount` in the station
says how: a wrist camera (ee) looks at the board lying on the table, a fixed camera at the board the gripper
holds. Moves are planned inside the workspace box and asked for first (--yes skips the question). Each ends
with one JSON line of its results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dojo.launch.config import ConfigError


def add_parser(subparsers) -> None:
    calibrate = subparsers.add_parser("calibrate", help="calibrate a station: board, intrinsics, handeye, "
                                                        "workspace, latency", description=__doc__)
    commands = calibrate.add_subparsers(dest="calibrate_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, camera: bool):
        p = commands.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--robot", required=True, metavar="FILE", help="the station's config file (or a shipped name)")
        if camera:
            p.add_argument("--camera", required=True, help="the camera's name in the station")
        p.add_argument("--out", metavar="FILE", help="the calibration file (default: the station's `calibration`)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a station override")
        p.add_argument("--yes", action="store_true", help="move the arm without asking first")
        return p

    p = commands.add_parser("board", help="draw the station's ChArUco boards as PNGs to print")
    p.add_argument("--robot", required=True, metavar="FILE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--dpi", type=int, default=300)
    p.set_defaults(func=draw_boards)
    p = command("intrinsics", "camera intrinsics from ChArUco views (the arm takes them, or --by-hand)", True)
    p.add_argument("--by-hand", action="store_true", help="a person moves the board in front of the camera")
    p.set_defaults(func=intrinsics)
    p = command("handeye", "where a camera is: T_cam_ee (mount ee) or T_cam_base (mount fixed)", True)
    p.add_argument("--teleop", action="store_true", help="drive the poses yourself, success to take each")
    p.set_defaults(func=handeye)
    p = command("workspace", "the workspace box the safety layer keeps the end-effector in", False)
    p.add_argument("--table", metavar="CAMERA", help="a margin above the table plane seen by this calibrated "
                                                      "camera, instead of teleop to the corners")
    p.add_argument("--margin-m", type=float, default=0.02, help="--table: lowest height above the table")
    p.add_argument("--height-m", type=float, default=0.3, help="--table: the box's height")
    p.set_defaults(func=workspace)
    p = command("latency", "command-to-motion latency of the arm; capture-to-arrival and motion-to-image of a "
                           "camera", False)
    p.add_argument("--camera", action="append", default=[], help="a camera to measure too (repeat)")
    p.set_defaults(func=latency)


# --- shared ------------------------------------------------------------------------------------------------
def _station(args):
    from dojo.robot.station import load_station

    return load_station(args.robot, args.set)[0]


def _calibration_path(args, station) -> Path:
    path = args.out or station.calibration
    if not path:
        raise ConfigError("the station names no calibration file: set `calibration: FILE` in it, or give --out FILE")
    return Path(path)


def _board(station, where: str):
    from dojo.calibration.board import BoardSpec

    if where not in station.calibration_boards:
        raise ConfigError(f"robot.calibration_boards has no {where!r} board")
    return BoardSpec(**station.calibration_boards[where])


def _camera(env, station, name: str):
    if name not in env.cameras:
        raise ConfigError(f"--camera {name!r} is not one of the station's cameras {sorted(env.cameras)}")
    return env.cameras[name], station.cameras[name].mount


def _confirm(args):
    def confirm(poses, what: str) -> bool:
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise ConfigError(f"{what} moves the arm to {len(poses)} poses: answer yes at a terminal, or pass --yes")
        return input(f"{what}: move the arm to {len(poses)} poses inside the workspace box? [y/N] ").strip().lower() \
            in ("y", "yes")
    return confirm


def _report(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(args, body) -> int:
    """Build the station's env, run `body(env, station) -> (result, summary)`, store the result, print JSON."""
    from dojo.calibration.file import update_calibration
    from dojo.robot.factory import make_robot_env

    station = _station(args)
    path = _calibration_path(args, station)
    env = make_robot_env(station)
    try:
        results, summary = body(env, station)
    finally:
        env.close()
    calibration = None
    for result in results:
        calibration = update_calibration(path, result)
    print(json.dumps({"calibration": str(path), "id": calibration.id if calibration else None, **summary}))
    return 0


def _box(station) -> dict:
    return {"box_min_m": station.safety.workspace_min_m, "box_max_m": station.safety.workspace_max_m}


def _intrinsics_of(env, station, name: str, path: Path):
    """K and distortion of a camera: from the calibration file if it has them, else the camera's own."""
    from dojo.calibration.file import load_calibration

    if path.is_file():
        cal = load_calibration(path)
        if name in cal.cameras() and cal.K(name) is not None:
            return cal.K(name), cal.dist(name)
    return env.cameras[name].read().intrinsics, None


# --- the commands --------------------------------------------------------------------------------------------
def draw_boards(args) -> int:
    import PIL.Image

    station = _station(argparse.Namespace(robot=args.robot, set=[]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for where in station.calibration_boards:
        board = _board(station, where)
        px_per_square = int(round(board.square_m / 0.0254 * args.dpi))
        path = out / f"{station.name}-{where}-board.png"
        PIL.Image.fromarray(board.image(px_per_square)).save(path, dpi=(args.dpi, args.dpi))
        written[where] = str(path)
    print(json.dumps({"boards": written, "dpi": args.dpi, "note": "print at 100 % scale and check a square's side"}))
    return 0


def intrinsics(args) -> int:
    from dojo.calibration.intrinsics import calibrate_intrinsics

    def body(env, station):
        camera, mount = _camera(env, station, args.camera)
        board = _board(station, "table" if mount == "ee" or args.by_hand else "gripper")
        arm_options = {} if args.by_hand else dict(arm=env.arm, mount=mount, **_box(station))
        result = calibrate_intrinsics(camera, env.clock, board, confirm=_confirm(args), report=_report, **arm_options)
        return [result], {"camera": args.camera, "K": np.round(result.K, 3).tolist(),
                          "dist": np.round(result.dist, 5).tolist(), "rms_px": round(result.rms_px, 4),
                          "views": len(result.views), "dropped": [v.label for v in result.dropped],
                          "warnings": list(result.warnings)}
    return _run(args, body)


def handeye(args) -> int:
    from dojo.calibration.handeye import calibrate_handeye

    def body(env, station):
        camera, mount = _camera(env, station, args.camera)
        K, dist = _intrinsics_of(env, station, args.camera, _calibration_path(args, station))
        board = _board(station, "table" if mount == "ee" else "gripper")
        result = calibrate_handeye(env.arm, env.clock, camera, board, mount=mount, K=K, dist=dist,
                                   teleop=env.teleop if args.teleop else None, confirm=_confirm(args),
                                   report=_report, **_box(station))
        worst = max(result.residuals, key=lambda r: r.translation_mm)
        return [result], {"camera": args.camera, "mount": mount, "method": result.method,
                          "T_cam_ref": np.round(result.T_cam_ref, 5).tolist(), "poses": len(result.residuals),
                          "worst_pose": {"label": worst.label, "mm": round(worst.translation_mm, 2),
                                         "deg": round(worst.rotation_deg, 3)}, "skipped": list(result.skipped)}
    return _run(args, body)


def workspace(args) -> int:
    from dojo.calibration.frames import invert
    from dojo.calibration.workspace import workspace_from_table, workspace_from_teleop

    def body(env, station):
        if args.table:
            camera, mount = _camera(env, station, args.table)
            path = _calibration_path(args, station)
            K, dist = _intrinsics_of(env, station, args.table, path)
            from dojo.calibration.file import load_calibration

            if mount != "fixed" or not path.is_file() or load_calibration(path).T_cam_base(args.table) is None:
                raise ConfigError(f"--table needs a fixed camera calibrated with `dojo calibrate handeye --camera "
                                  f"{args.table}` first")
            T_base_cam = invert(load_calibration(path).T_cam_base(args.table))
            lo, hi = station.safety.workspace_min_m, station.safety.workspace_max_m
            result = workspace_from_table(camera, env.clock, _board(station, "table"), K, dist, T_base_cam,
                                          xy_min_m=lo[:2], xy_max_m=hi[:2], margin_m=args.margin_m,
                                          height_m=args.height_m)
        else:
            if env.teleop is None:
                raise ConfigError("workspace by teleop needs the station's teleop device (robot.teleop.device), or "
                                  "--table CAMERA")
            result = workspace_from_teleop(env.arm, env.clock, env.teleop, reach_min_m=station.safety.workspace_min_m,
                                           reach_max_m=station.safety.workspace_max_m)
        return [result], {"min_m": np.round(result.min_m, 4).tolist(), "max_m": np.round(result.max_m, 4).tolist(),
                          "note": "copy these into the station's safety.workspace_min_m / workspace_max_m"}
    return _run(args, body)


def latency(args) -> int:
    from dojo.calibration.latency import measure_capture_to_arrival, measure_command_latency, measure_motion_to_image

    def body(env, station):
        if not _confirm(args)([None], "latency: steps of 2 cm"):
            raise ConfigError("latency moves the arm: answer yes, or pass --yes")
        results = [measure_command_latency(env.arm, env.clock, **_box(station))]
        summary = {"command_to_motion_ms": round(1000 * results[0].delay_s, 1)}
        for name in args.camera:
            camera, mount = _camera(env, station, name)
            K, dist = _intrinsics_of(env, station, name, _calibration_path(args, station))
            arrival = measure_capture_to_arrival(camera, env.clock)
            motion = measure_motion_to_image(env.arm, env.clock, camera,
                                             _board(station, "table" if mount == "ee" else "gripper"), K, dist=dist,
                                             **_box(station))
            results += [arrival, motion]
            summary[name] = {"capture_to_arrival_ms": round(1000 * arrival.capture_to_arrival_s, 1),
                             "motion_to_image_ms": round(1000 * motion.latency_s, 1)}
        return results, summary
    return _run(args, body)
