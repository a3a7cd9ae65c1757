"""`dojo replay info|verify|video|play STORE`: summarise a replay store, check it end to end, render an
episode as a video, or re-execute an episode's actions on the twin."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from dojo.replay.store import Episode, StoreError, open_store, verify_store


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


def _info(args: argparse.Namespace) -> int:
    try:
        summary = open_store(args.store).summary()
    except StoreError as err:
        print(f"dojo replay info: {err}", file=sys.stderr)
        return 1
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
