"""A mixed-quality multi-task store from the twin's language scene (dojo/sim/multitask.py), as prior data is:
for each instruction and each operator quality, N episodes of dojo.sim.operators.ScriptedOperator, successes
and failures alike, each with its instruction, task and operator in the store's episode metadata. Prints one
JSON line: each instruction's success rate per quality (the recording is the measurement).

    .venv/bin/python benchmarks/scene_dataset.py --out STORE [--episodes 20] [--qualities expert,sloppy,poor]
        [--tasks scene_pick_red,...] [--obs-mode state|pixels|both] [--image-size 64] [--seed 0]

A quality is a name in dojo.sim.multitask.QUALITIES or SKILL/NOISE_STD (e.g. 0.75/0.0, ScriptedOperator's
skill and noise_std). Every instruction is recorded from the same reset seeds (per quality), so each layout
appears once per instruction. Other code calls `record_scene_dataset`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def parse_quality(text: str) -> tuple[str, dict]:
    """A QUALITIES name, or SKILL/NOISE_STD: (its label, ScriptedOperator's skill and noise_std)."""
    from dojo.sim.multitask import QUALITIES

    if text in QUALITIES:
        return text, dict(QUALITIES[text])
    try:
        skill, noise_std = (float(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"quality must be one of {sorted(QUALITIES)} or SKILL/NOISE_STD (e.g. 0.75/0.0), "
                         f"got {text!r}") from None
    return f"skill={skill:g},noise_std={noise_std:g}", {"skill": skill, "noise_std": noise_std}


def record_scene_dataset(path: str, episodes: int, qualities=("expert", "sloppy", "poor"), tasks=None,
                         seed: int = 0, source: str = "demo", **env_options) -> dict:
    """Append `episodes` episodes per (instruction, quality) to the store at `path`; success rates and counts.

    `tasks`: scene task names (default all of dojo.sim.multitask.SCENE_TASKS); `env_options` go to make_env
    (obs_mode, image_size, max_episode_steps, ...). The operator field of each episode reads
    "sim-operator:<quality>".
    """
    from dojo.launch.cmd_record import record
    from dojo.replay.store import EpisodeWriter
    from dojo.sim import make_env
    from dojo.sim.multitask import SCENE_TASKS
    from dojo.sim.operators import ScriptedOperator

    tasks = list(SCENE_TASKS) if tasks is None else list(tasks)
    unknown = [t for t in tasks if t not in SCENE_TASKS]
    if unknown:
        raise ValueError(f"unknown scene task(s) {unknown}; expected some of {sorted(SCENE_TASKS)}")
    parsed = [parse_quality(q) for q in qualities]
    success: dict[str, dict[str, float]] = {}
    total_episodes = total_steps = 0
    writer = EpisodeWriter(path)
    try:
        for t, task in enumerate(tasks):
            env = make_env(task, **env_options)
            try:
                for q, (label, knobs) in enumerate(parsed):
                    # Lapses drawn independently per (instruction, quality); layouts shared across instructions.
                    operator = ScriptedOperator(env, seed=seed + 1000 * t + q, **knobs)
                    result = record(env, writer, episodes, teleop=operator, seed=seed + 100_000 * q, source=source,
                                    operator=f"sim-operator:{label}")
                    success.setdefault(task, {})[label] = result["success_rate"]
                    total_episodes, total_steps = total_episodes + result["episodes"], total_steps + result["steps"]
            finally:
                env.close()
    finally:
        writer.close()
    return {"store": str(path), "episodes": total_episodes, "steps": total_steps,
            "qualities": {label: knobs for label, knobs in parsed}, "success_rate": success}


def main() -> None:
    from dojo.sim.multitask import SCENE_TASKS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="STORE", help="store path (created, or appended to)")
    p.add_argument("--episodes", type=int, default=20, help="per instruction and quality")
    p.add_argument("--qualities", default="expert,sloppy,poor")
    p.add_argument("--tasks", default=",".join(SCENE_TASKS))
    p.add_argument("--obs-mode", choices=("state", "pixels", "both"), default="state")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--max-episode-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    result = record_scene_dataset(args.out, args.episodes, args.qualities.split(","), args.tasks.split(","),
                                  seed=args.seed, obs_mode=args.obs_mode,
                                  image_size=(args.image_size, args.image_size),
                                  max_episode_steps=args.max_episode_steps)
    print(json.dumps({**result, "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
