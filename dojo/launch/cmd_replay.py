"""`dojo replay info|verify|video|play STORE`: summarise a replay store, check it end to end, render an
episode as a video, or re-execute an episode's actions on the twin; `dojo replay export|import`: a store to
and from a LeRobotDataset v3 folder (dojo/replay/lerobot/)."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dojo.replay.store import SOURCES, Episode, StoreError, open_store, verify_store


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    replay = subparsers.add_parser("replay", help="inspect, check, render and re-execute replay stores")
    commands = replay.add_subparsers(dest="replay_command", required=True, metavar="SUBCOMMAND")
    info = commands.add_parser("info", help="print one JSON line: episodes, steps, bytes, keys, sources, success")
    info.add_argument("store", help="path of the Zarr replay store")
    info.set_defaults(func=_info)
    verify = commands.add_parser("verify", help="decode every committed chunk and check the store's invariants")
    verify.add_argument("store", help="path of the Zarr replay store")
    verify.set_defaults(func=_verify)
    video = commands.add_parser(
        "video", help="write an episode's camera views side by side, with a state and action caption, to a video",
        description="Write one episode's camera views (every uint8 HxWx3 observation key) side by side, scaled to "
                    "at least --min-height pixels, above a caption with each step's index, reward, action, "
                    "end-effector position, gripper width and success/intervened flags. Prints one JSON line.")
    video.add_argument("store", help="path of the Zarr replay store")
    video.add_argument("--episode", type=int, required=True, metavar="N", help="episode index (0-based)")
    video.add_argument("--out", required=True, metavar="FILE.mp4", help="video file to write (.mp4, .mkv or .mov)")
    video.add_argument("--fps", type=float, default=10.0, help="frames per second (the twin records at 10 Hz)")
    video.add_argument("--min-height", type=int, default=256, metavar="PX", help="scale camera views up to this height")
    video.set_defaults(func=_video)
    export = commands.add_parser(
        "export", help="write a store's closed episodes as a LeRobotDataset v3 folder (parquet + mp4)",
        description="Write every closed episode as a LeRobotDataset v3 (meta/info.json, stats, tasks, episodes; "
                    "data/chunk-*/file-*.parquet; videos/<camera>/chunk-*/file-*.mp4) that LeRobotDataset(repo_id, "
                    "root=DIR) loads. Each stored row is one frame; the instruction is the frame's task; source, "
                    "success and the rest of the episode metadata are dojo/* columns of meta/episodes; interventions "
                    "are the per-frame column 'intervention'. Mapping: dojo/replay/lerobot/MAPPING.md. Prints one JSON "
                    "line.")
    export.add_argument("store", help="path of the Zarr replay store")
    export.add_argument("--format", choices=("lerobot",), default="lerobot", help="dataset format (LeRobot v3)")
    export.add_argument("--out", required=True, metavar="DIR", help="new folder to write (must not exist, or be empty)")
    export.add_argument("--fps", type=int, default=10,
                        help="rate the store was recorded at (the twin records at 10 Hz)")
    export.add_argument("--crf", type=int, default=30,
                        help="AV1 quality of the camera videos, 0-63, lower is closer to the stored images "
                             "(LeRobot's default 30)")
    export.set_defaults(func=_export)
    importer = commands.add_parser(
        "import", help="read a local LeRobotDataset v3 folder into a new store",
        description="Read a LeRobotDataset v3 folder into a new store: observation.state and other 1-D "
                    "observation.* features, RGB cameras (video or image features), action, next.reward, "
                    "next.done, next.truncated, intervention; the frame's task becomes the episode's instruction. "
                    "Each frame is one step and the last frame's observation is repeated as the final one; a folder "
                    "that dojo exported comes back exactly. Nothing is downloaded. Prints one JSON line.")
    importer.add_argument("dataset", metavar="DIR", help="LeRobot v3 dataset folder (with meta/info.json)")
    importer.add_argument("--format", choices=("lerobot",), default="lerobot", help="dataset format (LeRobot v3)")
    importer.add_argument("--out", required=True, metavar="STORE", help="new store to write (must not exist)")
    importer.add_argument("--source", choices=SOURCES, default=None,
                          help="every episode's source (default: a dojo export's own, else demo)")
    importer.add_argument("--task", default=None, metavar="NAME",
                          help="every episode's dojo task, e.g. pick_cube (default: a dojo export's own, else none)")
    importer.add_argument("--rescale-actions", action="store_true",
                          help="map each action dimension's [min, max] over the dataset onto [-1, 1] (dojo stores "
                               "actions in [-1, 1]; the JSON line gives the bounds)")
    importer.set_defaults(func=_import)
    play = commands.add_parser(
        "play", help="re-execute an episode's stored actions on the twin and compare the trajectories",
        description="Reset the env with the episode's reset seed (seed 0, with a warning, when the store does not "
                    "know it), execute its stored actions open-loop, and print one JSON line: steps, stored and "
                    "replayed success, and the max and final end-effector position deviation in metres between "
                    "the stored and replayed trajectories. The env is the MuJoCo twin; on a robot this command "
                    "would drive the arm: make_play_env is the one place that builds the env, for a hardware "
                    "RobotEnv to be dropped in.")
    play.add_argument("store", help="path of the Zarr replay store")
    play.add_argument("--episode", type=int, required=True, metavar="N", help="episode index (0-based)")
    play.add_argument("--sim", metavar="TASK", default=None, help="twin task (default: the episode's task)")
    play.add_argument("--seed", type=int, default=None, help="reset seed (default: the episode's reset_seed)")
    play.add_argument("--control-hz", type=float, default=10.0, help="control rate the episode was recorded at")
    play.add_argument("--action-frame", choices=("base", "ee"), default="base",
                      help="frame the stored action deltas are in")
    play.set_defaults(func=_play)
    relabel = commands.add_parser(
        "relabel", help="replace a store's rewards with a reward model's (observations untouched)",
        description="Score every closed episode with a reward model folder (`dojo reward train`): step t gets the "
                    "model's verdict on the frame it led to (1/0 for success models, the scaled reward for "
                    "preference models). Rewrites rewards and mc_return only, and records '<kind>:<model id>:v<version>' "
                    "as each episode's reward_source. Prints one JSON line.")
    relabel.add_argument("store", help="path of the Zarr replay store")
    relabel.add_argument("--reward", required=True, metavar="MODEL", help="reward model folder")
    relabel.set_defaults(func=_relabel)


def _info(args: argparse.Namespace) -> int:
    try:
        reader = open_store(args.store)
        summary = reader.summary()
    except StoreError as err:
        print(f"dojo replay info: {err}", file=sys.stderr)
        return 1
    # Which station calibrations (file ids) the episodes were recorded with; "" is none.
    calibrations: dict[str, int] = {}
    for episode in reader.episodes:
        calibrations[episode.calibration_id] = calibrations.get(episode.calibration_id, 0) + 1
    summary["calibrations"] = calibrations
    print(json.dumps(summary, sort_keys=True))
    return 0


def _verify(args: argparse.Namespace) -> int:
    try:
        reader = verify_store(args.store)
    except StoreError as err:
        print(f"dojo replay verify: {err}", file=sys.stderr)
        return 1
    print(f"{args.store}: ok ({reader.num_episodes} episodes, {reader.num_steps} steps, {reader.num_rows} rows)")
    return 0


def _video(args: argparse.Namespace) -> int:
    from dojo.replay.video import write_video

    try:
        result = write_video(args.store, args.episode, args.out, fps=args.fps, min_height_px=args.min_height,
                             progress=sys.stderr.isatty())
    except StoreError as err:
        print(f"dojo replay video: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def _export(args: argparse.Namespace) -> int:
    from dojo.replay.lerobot.export import export_lerobot
    from dojo.replay.lerobot.video import VideoSettings

    if not 0 <= args.crf <= 63:
        raise ValueError(f"--crf must be in 0..63 (AV1's quality scale), got {args.crf}")
    result = export_lerobot(args.store, args.out, fps=args.fps, video=VideoSettings(crf=args.crf),
                            progress=sys.stderr.isatty())
    print(json.dumps(result))
    return 0


def _import(args: argparse.Namespace) -> int:
    from dojo.replay.lerobot.importer import import_lerobot

    result = import_lerobot(args.dataset, args.out, source=args.source, task=args.task,
                            rescale_actions=args.rescale_actions, progress=sys.stderr.isatty())
    print(json.dumps(result))
    return 0


def make_play_env(task: str, action_dim: int, max_episode_steps: int, control_hz: float, action_frame: str):
    """The env an episode is re-executed on: the twin. A hardware RobotEnv (same interface) goes here."""
    from dojo.sim import make_env

    return make_env(task, obs_mode="state", action_dim=action_dim, control_hz=control_hz,
                    action_frame=action_frame, max_episode_steps=max_episode_steps)


def play_episode(env, episode: Episode, seed: int) -> dict:
    """Reset `env` with `seed`, execute the episode's actions until they run out or the env ends the
    episode, and compare end-effector positions (state[:3], metres) row by row."""
    if "state" not in episode.obs:
        raise ValueError(f"episode {episode.info.index} has no 'state' observation to compare against")
    obs, info = env.reset(seed=seed)
    replayed, success = [obs["state"][:3]], bool(info["success"])
    for action in episode.action:
        obs, _, terminated, truncated, info = env.step(action)
        replayed.append(obs["state"][:3])
        success = bool(info["success"])
        if terminated or truncated:
            break
    replayed = np.asarray(replayed, np.float64)
    deviation_m = np.linalg.norm(replayed - episode.obs["state"][:len(replayed), :3].astype(np.float64), axis=1)
    return {"steps": len(replayed) - 1, "stored_steps": episode.info.num_steps,
            "stored_success": episode.info.success, "replayed_success": success,
            "max_ee_deviation_m": float(deviation_m.max()), "final_ee_deviation_m": float(deviation_m[-1])}


def _play(args: argparse.Namespace) -> int:
    try:
        reader = open_store(args.store)
    except StoreError as err:
        print(f"dojo replay play: {err}", file=sys.stderr)
        return 1
    if not 0 <= args.episode < reader.num_episodes:
        raise ValueError(f"episode {args.episode} does not exist: {args.store} has {reader.num_episodes} closed "
                         f"episodes, expected an index in 0..{reader.num_episodes - 1}")
    episode = reader.read_episodes(args.episode, args.episode + 1, obs_keys=("state",) if "state" in
                                   reader.obs_keys else ())[0]
    info = episode.info
    task = args.sim or info.task
    if not task:
        raise ValueError(f"episode {args.episode} has no task in its metadata: pass --sim TASK")
    seed = args.seed if args.seed is not None else info.reset_seed
    if seed < 0:
        print(f"dojo replay play: warning: episode {args.episode} has no reset seed (recorded before the store "
              "kept one); resetting with seed 0, so the scene may differ from the recording", file=sys.stderr)
        seed = 0
    env = make_play_env(task, reader.action_dim, max(info.num_steps, 1), args.control_hz, args.action_frame)
    try:
        result = play_episode(env, episode, seed)
    finally:
        env.close()
    print(json.dumps({"store": str(args.store), "episode": args.episode, "task": task, "reset_seed": seed,
                      "robot": info.robot, **result}))
    return 0


def _relabel(args: argparse.Namespace) -> int:
    from dojo.rewards.base import load_reward_model
    from dojo.rewards.relabel import relabel_store

    model = load_reward_model(args.reward)
    print(json.dumps(relabel_store(args.store, model)))
    return 0
