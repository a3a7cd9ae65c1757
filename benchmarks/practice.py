"""A reset-free practice session on the twin's task pair (`dojo practice --sim cube_pads`) for one seed: success over
the last 50 attempts of each direction and human resets per 100 attempts; optionally the reset-based baseline (the
forward task alone, `dojo train --sim cube_to_green`, the same env steps) and a session whose learner and actor
are SIGKILLed at random moments, checked for lost or duplicated steps.

Run: .venv/bin/python benchmarks/practice.py --seed S --out DIR [--env-steps 20000] [--reset-based] [--kills 4]
Prints one JSON line: forward_success, backward_success, human_resets_per_100, ...; forward_from_resets and
backward_from_resets: the session's last policy, acting with its mode, on --eval-episodes attempts of each
direction from a person's full reset (a scene the session did not leave itself); and reset_based_success; with
--kills, the kills made, the restarts the session logged, and whether every actor's journal and the learner's copy
hold the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dojo import runs  # noqa: E402

CLI = [sys.executable, "-m", "dojo.launch.cli"]


def dojo(*args: str, kills: int = 0, seed: int = 0) -> tuple[dict, int]:
    """Run a dojo command to its end (with `kills`, SIGKILL its learner or actor at random moments while it runs);
    (its last stdout line as JSON, the kills made). Raises with the command's error line."""
    proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng, made = random.Random(seed), 0
    run = Path(args[args.index("--run") + 1])
    while kills and made < kills and proc.poll() is None:
        time.sleep(rng.uniform(20, 90))
        victim = rng.choice(["learner", "actor"])
        pid = _child(proc.pid, victim)
        if pid is not None and (run / runs.CHECKPOINT).exists():
            os.kill(pid, signal.SIGKILL)
            made += 1
            print(f"killed the {victim} (pid {pid})", file=sys.stderr, flush=True)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"dojo {args[0]} failed: {err.strip().splitlines()[-1:]}")
    return json.loads(out.strip().splitlines()[-1]), made


def _child(parent: int, command: str) -> int | None:
    """The pid of `parent`'s child process running `dojo COMMAND` (None when there is none just now)."""
    try:
        for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if len(argv) > 3 and argv[3].decode() == command:
                return int(pid)
    except OSError:
        pass
    return None


def same_steps(run: Path) -> bool:
    """Every actor's journal and the learner's store of it hold the same episodes and rows: none lost, none twice.
    The journal may hold more only as an attempt its actor began as the learner stopped (its open episode, whose
    steps wait in the journal and go to the learner on the next run)."""
    import numpy as np

    from dojo.replay.store import StoreReader

    for journal in sorted((run / "journal").glob("*.zarr")):
        mine, theirs = StoreReader(journal), StoreReader(run / runs.REPLAY / journal.name)
        rows, waiting = theirs.num_rows, mine.num_rows - theirs.num_rows
        if len(mine.episodes) != len(theirs.episodes) or waiting < 0:
            return False
        if waiting and (mine.open_episode is None or mine.open_episode["start_row"] < rows):
            return False
        for key in ("action", "reward", "obs/state"):
            if not np.array_equal(mine.read(key, 0, rows), theirs.read(key)):
                return False
    return True


def from_resets(run: Path, episodes: int, seed: int) -> dict:
    """{DIRECTION_from_resets: success rate} of the run's last policy (its mode) over `episodes` attempts of each
    direction, each from a full reset of the twin's scene: the cube on the direction's start pad at any yaw."""
    import numpy as np
    from omegaconf import OmegaConf

    from dojo.policies.evaluation import evaluate
    from dojo.policies.snapshot import Policy
    from dojo.policies.spaces import CanonicalEnv
    from dojo.robot.practice import DIRECTIONS
    from dojo.sim import make_env
    from dojo.sim.task_pair import CubePads

    cfg, policy, result = OmegaConf.load(run / runs.CONFIG), Policy(str(run / runs.SNAPSHOT), seed=seed), {}
    for direction in DIRECTIONS:
        onehot = np.array([d == direction for d in DIRECTIONS], np.float32)  # as the session's state ends
        env = CanonicalEnv(make_env(CubePads.direction_names[direction], control_hz=cfg.env.control_hz,
                                    action_dim=cfg.env.action_dim, max_episode_steps=cfg.env.max_episode_steps))
        act = lambda obs: policy.act_normalized({**obs, "state": np.concatenate([obs["state"], onehot])})  # noqa: E731,B023
        result[f"{direction}_from_resets"] = evaluate(env, act, episodes, seed)["success_rate"]
        env.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for the runs")
    p.add_argument("--env-steps", type=int, default=20_000)
    p.add_argument("--reset-based", action="store_true", help="also the forward task with resets, same env steps")
    p.add_argument("--eval-episodes", type=int, default=30, help="attempts per direction from a full reset")
    p.add_argument("--kills", type=int, default=0, help="SIGKILL the learner or actor this many times")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for both runs")
    args = p.parse_args()
    if args.eval_episodes < 1:
        p.error(f"--eval-episodes must be >= 1, got {args.eval_episodes}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"seed={args.seed}", f"learner.env_steps={args.env_steps}", *args.set]
    run = out / f"practice-seed{args.seed}{'-killed' if args.kills else ''}"
    started = time.monotonic()
    report, kills = dojo("practice", "--sim", "cube_pads", "--run", run, *common, kills=args.kills, seed=args.seed)
    result = {"seed": args.seed, "env_steps": report["env_steps"], "forward_success": report["forward_success"],
              "backward_success": report["backward_success"], "human_resets_per_100": report["human_resets_per_100"],
              "attempts": report["attempts"], "forward_attempts": report["forward_attempts"],
              "backward_attempts": report["backward_attempts"], "human_resets": report["human_resets"],
              "practice_wall_s": round(time.monotonic() - started, 1), "run": str(run),
              **from_resets(run, args.eval_episodes, 1000 + args.seed)}
    if args.kills:
        logs = "".join(p.read_text() for p in run.glob("*.log"))
        result.update(kills=kills, restarts=logs.count("starting it again"), same_steps=same_steps(run))
    if args.reset_based:
        started = time.monotonic()
        base, _ = dojo("train", "--sim", "cube_to_green", "--run", out / f"reset-seed{args.seed}", *common,
                       "eval.episodes=50")
        from dojo.learners.report import finished_episodes

        done = [e.success for e, _ in finished_episodes(Path(base["run"]))]
        result.update(reset_based_success=round(sum(done[-50:]) / len(done[-50:]), 3) if done else None,
                      reset_based_eval_success=base["success_rate"],
                      reset_based_wall_s=round(time.monotonic() - started, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
