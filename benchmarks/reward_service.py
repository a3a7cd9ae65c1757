"""The learner's reward service in `dojo train`: the round trip from the actor's request to its label.

A small PaliGemma built from a config in code (random weights: the pipeline, not a pretrained VLM's verdicts) is
a zero-shot VLM success classifier on the twin's front + wrist cameras. `dojo train --sim pick_cube
reward.source=vlm` then runs it in the learner (reward.serve=auto puts a VLM there): the actor process sends its
frames over the authenticated link every `reward.every` steps and on each episode's last step, and waits at most
`reward.deadline_s`. Reported from the actor's own summary: labels, missed labels, the median and p95 round trip;
as the baseline, measured in this process in the same run, the time of one label by the same model without the
link, and the round trip through the same service, link and client in this process while nothing else runs.
The first ratio is what the link, the queue and a learner busy with its updates add; the second, the link alone.

Run: .venv/bin/python benchmarks/reward_service.py --out DIR [--env-steps 600] [--every 10] [--deadline 2.0]
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

from reward_vlm import seconds_per_label  # noqa: E402

CAMERAS = ("front", "wrist")


def twin_frames(size: int) -> dict:
    from dojo.sim import make_env

    env = make_env("pick_cube", obs_mode="both", image_size=(size, size))
    obs, _ = env.reset(seed=0)
    env.close()
    return {k: obs[k] for k in CAMERAS}


def idle_link_ms_per_label(model, frames: dict, instruction: str, folder: Path, calls: int = 30) -> float:
    """Median ms of one label through a RewardService behind a real LinkServer and LinkClient on loopback, in
    this process, with nothing else running: the link's and the queue's own share of the round trip."""
    from dojo.link import LinkClient, LinkServer, MemoryJournal, create_keys
    from dojo.rewards.service import RemoteReward, RewardService

    keys = create_keys(folder, ["actor-0"], exist_ok=True)
    service = RewardService(model)
    try:
        with LinkServer(lambda *a: None, keys, port=0, scorer=service).start() as server, \
                LinkClient(MemoryJournal(), server.address, keys, "actor-0") as client:
            remote = RemoteReward(client, deadline_s=30.0)
            for _ in range(calls + 1):
                remote.label(frames, instruction)
            return float(np.median(remote.round_trips_ms[1:]))
    finally:
        service.close()


def main(argv=None) -> dict:
    from dojo.rewards.vlm import VLMClassifier
    from dojo.sim.tasks import TASKS
    from dojo.sim.tiny_vlm import build_tiny_paligemma

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--env-steps", type=int, default=600)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--deadline", type=float, default=2.0)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64, help="camera frames and the vision tower's input side")
    args = p.parse_args(argv)
    out = Path(args.out)
    instruction = TASKS["pick_cube"].instruction
    base = build_tiny_paligemma(out / "paligemma", hidden_size=args.hidden_size, image_size=args.image_size,
                                extra_text=[instruction])
    model = VLMClassifier.zero_shot(base, CAMERAS, (instruction,))
    model.save(out / "vlm")
    frames = twin_frames(args.image_size)
    local_ms = 1000.0 * seconds_per_label(model, {k: v[None] for k, v in frames.items()}, instruction, batch=1,
                                          calls=30)  # the same model without the link
    idle_ms = idle_link_ms_per_label(model, frames, instruction, out / "idle_link")
    run = out / "run"
    cmd = [sys.executable, "-m", "dojo.launch.cli", "train", "--sim", "pick_cube", "--run", str(run),
           "reward.source=vlm", f"reward.model={out / 'vlm'}", f"reward.every={args.every}",
           f"reward.deadline_s={args.deadline}", f"env.image_size={args.image_size}",
           f"learner.env_steps={args.env_steps}", "demos.episodes=2", "eval.episodes=0"]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "MUJOCO_GL": "egl"})
    wall_s = time.monotonic() - t0
    actor = {}
    for line in (run / "actor-0.log").read_text().splitlines():
        if line.startswith("{") and "reward_labels" in line:
            actor = json.loads(line)  # the actor's summary (the last one, should it have been restarted)
    trip = actor.get("reward_round_trip_ms_median")
    summary = {"model": "PaliGemma built from a config (random weights), zero-shot", "hidden_size": args.hidden_size,
               "image_size": args.image_size, "cameras": list(CAMERAS), "every": args.every,
               "deadline_s": args.deadline, "env_steps": actor.get("steps"), "episodes": actor.get("episodes"),
               "labels": actor.get("reward_labels"), "missed": actor.get("reward_missed"),
               "round_trip_ms_median": trip, "round_trip_ms_p95": actor.get("reward_round_trip_ms_p95"),
               "local_label_ms_median": round(local_ms, 2), "idle_link_round_trip_ms_median": round(idle_ms, 2),
               "round_trip_over_local": round(trip / local_ms, 2) if trip else None,
               "idle_link_over_local": round(idle_ms / local_ms, 2), "train_wall_s": round(wall_s, 1)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
