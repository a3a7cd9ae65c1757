"""V-GPS on the twin's multi-task scene: base generalist against the same generalist steered by a language-
conditioned Cal-QL critic, and against a ground-truth oracle as the ceiling. Prints one JSON line.

    python benchmarks/steering.py --seed 0                    # small: minutes on 2 CPU cores
    python benchmarks/steering.py --seed 0 --episodes 50      # the issue's 50 episodes per instruction

One seed runs the whole pipeline: a mixed-quality multi-task store (dojo.sim.multitask's operators: expert,
sloppy, poor in equal shares, failures kept), dojo's flow-matching generalist trained by BC on it, a critic
trained offline on it by the one learner (`dojo learn --offline --agent calql-vgps learner.language_encoder=...
learner.relabel=...`), then per instruction the same evaluation layouts (reset seeds) for every variant:
base (K = 1), V-GPS at K = 10 and K = 50 with beta = 0, K = 10 with beta = 1, and the oracle (K = 5, on the
first --oracle-episodes layouts: it simulates every candidate). All variants
execute chunks the same way (temporal ensembling over the generalist's chunk, no sticky gripper).

The oracle is the twin's ground truth as a critic: for each candidate it saves the MuJoCo state, runs the
candidate's whole chunk in the env, scores it (1 + the share of the chunk left on success, else the task's
dense progress) and restores the state. Language embeddings come from a tiny random BERT
(dojo.sim.tiny_language): it tells the instructions apart and carries no meaning beyond that.

steer_ms_per_step: the added latency per control step at K = 10 (state critic): V-GPS's sampling + scoring
minus the base's sampling, means over steering steps after each evaluation's first (its compilation).
openpi_round_trip: V-GPS at K = 10 with the generalist served by `dojo serve-policy` in another process on
loopback (one request of K candidates per step), on the first instruction.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class TwinOracle:
    """The twin's ground truth as a scorer for SteeredPolicy: each candidate chunk run from a saved MuJoCo
    state. Needs the unwrapped RobotEnv of the twin."""

    def __init__(self, env) -> None:
        import mujoco

        self.robot = env.unwrapped
        self.world = self.robot.task.world
        self.saved = mujoco.MjData(self.world.model)
        self.action_dim = int(env.action_space.shape[0])
        self._copy = mujoco.mj_copyData

    def score(self, obs, instruction, chunks) -> np.ndarray:
        robot, arm, m, d = self.robot, self.robot.arm, self.world.model, self.world.data
        self._copy(self.saved, m, d)
        target = (arm.target_pos_m.copy(), arm.target_quat_wxyz.copy())
        steps = robot._steps
        scores = []
        for chunk in np.asarray(chunks):
            score = None
            for i, action in enumerate(chunk):
                _, _, terminated, truncated, info = robot.step(action)
                if info["success"]:
                    score = 1.0 + (len(chunk) - i - 1) / len(chunk)
                    break
                if truncated:
                    break
            scores.append(score if score is not None else float(robot.task.dense(arm.state())))
            self._copy(d, m, self.saved)
            arm.target_pos_m, arm.target_quat_wxyz = target[0].copy(), target[1].copy()
            robot._steps = steps
        return np.asarray(scores)


def _evaluate(task: str, policy, episodes: int, seed: int, max_steps: int, with_oracle: bool = False) -> dict:
    from dojo.policies.evaluation import evaluate
    from dojo.policies.spaces import CanonicalEnv
    from dojo.policies.steering import SteeringEnv
    from dojo.sim.envs import make_env

    env = CanonicalEnv(make_env(task, max_episode_steps=max_steps))
    try:
        if with_oracle:
            policy.scorer = TwinOracle(env)
        policy.log.clear()
        result = evaluate(SteeringEnv(env, policy), policy.act_normalized, episodes, seed=seed)
    finally:
        env.close()
    warm = [r for r in policy.log if not (r["episode"] == 0 and r["t"] == 0)]  # the first step compiles
    result["ms_per_step"] = float(np.mean([r["sample_ms"] + r["score_ms"] for r in warm])) if warm else None
    result["sample_ms"] = float(np.mean([r["sample_ms"] for r in warm])) if warm else None
    result["q_spread"] = float(np.mean([r["q_spread"] for r in warm])) if warm else None
    return result


def _openpi_round_trip(gen_path: Path, critic, task: str, episodes: int, seed: int, max_steps: int) -> dict:
    """V-GPS at K = 10 with dojo's generalist served by `dojo serve-policy` in another process on loopback (the
    K candidates of a step in one request): success and milliseconds per steering step."""
    import re
    import subprocess

    from dojo.policies.generalist import OpenpiGeneralist
    from dojo.policies.steering import ChunkExecution, SteeredPolicy

    server = subprocess.Popen([sys.executable, "-m", "dojo.launch.cli", "serve-policy", "--generalist",
                               str(gen_path), "--port", "0", "--seed", str(seed)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        url = None
        for line in server.stderr:  # "dojo serve-policy: serving ... at ws://HOST:PORT (Ctrl-C stops)"
            found = re.search(r"ws://\S+", line)
            if found:
                url = found.group(0)
                break
        if url is None:
            raise SystemExit(f"dojo serve-policy exited with {server.wait()} before serving")
        with OpenpiGeneralist(url, timeout_s=60.0) as generalist:
            policy = SteeredPolicy(generalist, critic, 10, 0.0, ChunkExecution("ensemble", generalist.chunk_len),
                                   seed=seed)
            return _evaluate(task, policy, episodes, evaluation_seed(seed), max_steps)
    finally:
        server.terminate()
        server.wait()


def _latency(gen_path: Path, critic, encoder, task: str, k: int, reps: int, seed: int) -> dict:
    """Milliseconds per control step at one twin observation, medians over `reps`: the base's sampling of one
    chunk; V-GPS's K chunks + scoring with the trained state critic; and with an untrained critic of the same
    preset that also reads the front camera (128x128: the state + 1-camera critic; weights do not change its
    cost)."""
    from dojo.learners import make_agent
    from dojo.policies.generalist import load_generalist
    from dojo.policies.snapshot import with_critic
    from dojo.policies.spaces import CanonicalEnv, ObsSpec
    from dojo.policies.steering import ChunkExecution, Critic, SteeredPolicy
    from dojo.sim.envs import make_env

    env = CanonicalEnv(make_env(task, obs_mode="both", image_size=(128, 128)))
    try:
        obs, _ = env.reset(seed=seed)
    finally:
        env.close()
    spec = ObsSpec(critic.snapshot.obs_spec.state_dim, (("front", (128, 128, 3)),))
    agent = make_agent("calql-vgps", spec, critic.snapshot.action_scale)
    camera = Critic(with_critic(agent.snapshot(), agent.modules[1], agent.target_critic_params, critic.language),
                    encoder)

    def per_step(policy) -> float:
        times = []
        for i in range(reps + 2):  # the first calls compile
            policy.log.clear()
            policy.execution.reset()
            policy.act_normalized(obs)
            if i >= 2:
                times.append(policy.log[-1]["sample_ms"] + policy.log[-1]["score_ms"])
        return float(np.median(times))

    def steered(scorer, kk):
        g = load_generalist(gen_path, seed=seed)
        return SteeredPolicy(g, scorer, kk, 0.0, ChunkExecution("ensemble", g.chunk_len),
                             instruction=critic_instruction(task))

    base = per_step(steered(None, 1))
    state = per_step(steered(critic, k))
    cam = per_step(steered(camera, k))
    return {"k": k, "base_ms": round(base, 3), "vgps_state_ms": round(state, 3), "vgps_camera_ms": round(cam, 3),
            "steer_ms_per_step": round(state - base, 3), "steer_ms_per_step_camera": round(cam - base, 3)}


def evaluation_seed(seed: int) -> int:
    """The first reset seed of a benchmark seed's evaluation layouts: layouts no recorded episode started from."""
    return 1_000_000 + seed * 10_000


def critic_instruction(task: str) -> str:
    from dojo.sim.multitask import INSTRUCTIONS

    return INSTRUCTIONS[task]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per instruction and variant")
    parser.add_argument("--data-episodes", type=int, default=100, help="recorded episodes per instruction")
    parser.add_argument("--generalist-steps", type=int, default=20000,
                        help="BC updates of the generalist (its mean success at seed 0: 1 %% after 3,000, 12 %% after 20,000)")
    parser.add_argument("--critic-updates", type=int, default=5000)
    parser.add_argument("--agent", default="calql-vgps", help="the critic's preset (calql-vgps or iql-vgps)")
    parser.add_argument("--relabel", default="vgps-success", choices=("vgps", "vgps-success"))
    parser.add_argument("--tasks", default="", help="comma-separated scene tasks (default: all of them)")
    parser.add_argument("--max-steps", type=int, default=100, help="control steps per episode")
    parser.add_argument("--oracle-episodes", type=int, default=3,
                        help="episodes per instruction of the oracle (it simulates every candidate: slow); 0: none")
    parser.add_argument("--variants", default="base,vgps,vgps_k50,vgps_beta1",
                        help="which of base, vgps, vgps_k50, vgps_beta1 to run")
    parser.add_argument("--openpi-episodes", type=int, default=2,
                        help="episodes of the first instruction steered over the openpi protocol (0: none)")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the per-step latency at K = 10 (state and state + camera critics), after training")
    parser.add_argument("--work", help="keep the store, generalist and critic here (default: a temporary folder)")
    args = parser.parse_args()

    from dojo.policies.generalist import GeneralistConfig, load_generalist, save_generalist, train_generalist
    from dojo.policies.language import load_language_encoder
    from dojo.policies.steering import ChunkExecution, Critic, SteeredPolicy
    from dojo.sim.multitask import INSTRUCTIONS, SCENE_TASKS, record_multitask_dataset
    from dojo.sim.tiny_language import build_tiny_language_encoder

    started = time.monotonic()
    tasks = [t for t in args.tasks.split(",") if t] or list(SCENE_TASKS)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dojo-steering-"))
    work.mkdir(parents=True, exist_ok=True)
    lang_dir, store = work / "lang", work / "data.zarr"
    gen_path, critic_run = work / "generalist.msgpack", work / "critic"
    timings = {}

    if not (lang_dir / "config.json").is_file():
        build_tiny_language_encoder(lang_dir, seed=args.seed)
    t0 = time.monotonic()
    data = None
    if not store.exists():
        data = record_multitask_dataset(store, args.data_episodes, seed=args.seed * 100_000, tasks=tasks,
                                        max_episode_steps=args.max_steps)
    timings["record_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    if not gen_path.is_file():
        model = train_generalist(store, lang_dir, GeneralistConfig(), steps=args.generalist_steps, seed=args.seed)
        save_generalist(gen_path, model)
    timings["generalist_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    if not (critic_run / "policy.msgpack").is_file():
        cmd = [sys.executable, "-m", "dojo.launch.cli", "learn", "--offline", "--agent", args.agent,
               "--data", str(store), "--steps", str(args.critic_updates), "--out", str(critic_run), "--no-progress",
               "--seed", str(args.seed), f"learner.language_encoder={lang_dir}", f"learner.relabel={args.relabel}"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        if out.returncode:
            raise SystemExit(f"critic training failed: {out.stderr.strip().splitlines()[-1:]}")
    timings["critic_s"] = round(time.monotonic() - t0, 1)

    encoder = load_language_encoder(lang_dir)
    critic = Critic(str(critic_run / "policy.msgpack"), encoder)
    if args.latency_only:
        print(json.dumps({"benchmark": "steering-latency", "seed": args.seed, **_latency(
            gen_path, critic, encoder, tasks[0], 10, 50, args.seed), "cpu_count": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 1)}))
        return
    variants = {"base": (1, 0.0), "vgps": (10, 0.0), "vgps_k50": (50, 0.0), "vgps_beta1": (10, 1.0)}
    chosen = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(chosen) - set(variants))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; expected some of {sorted(variants)}")
    runs = {v: variants[v] for v in chosen}
    if args.oracle_episodes > 0:
        runs["oracle"] = (5, 0.0)
    eval_seed = evaluation_seed(args.seed)
    per_instruction: dict[str, dict] = {}
    ms: dict[str, list] = {}
    t0 = time.monotonic()
    for task in tasks:
        row = per_instruction.setdefault(INSTRUCTIONS[task], {})
        for name, (k, beta) in runs.items():
            generalist = load_generalist(gen_path, seed=args.seed)  # the same noise stream for every variant
            policy = SteeredPolicy(generalist, None if name == "base" else critic, k, beta,
                                   ChunkExecution("ensemble", generalist.chunk_len), seed=args.seed)
            episodes = args.oracle_episodes if name == "oracle" else args.episodes
            result = _evaluate(task, policy, episodes, eval_seed, args.max_steps, with_oracle=name == "oracle")
            row[name] = result["success_rate"]
            ms.setdefault(name, []).append(result["ms_per_step"])
            if name == "base":
                ms.setdefault("base_sample", []).append(result["sample_ms"])
    timings["eval_s"] = round(time.monotonic() - t0, 1)
    openpi = None
    if args.openpi_episodes > 0:
        result = _openpi_round_trip(gen_path, critic, tasks[0], args.openpi_episodes, args.seed, args.max_steps)
        openpi = {"instruction": INSTRUCTIONS[tasks[0]], "episodes": args.openpi_episodes,
                  "success": result["success_rate"], "ms_per_step": round(result["ms_per_step"], 3),
                  "sample_ms": round(result["sample_ms"], 3)}

    def mean_of(name):
        return round(float(np.mean([r[name] for r in per_instruction.values()])), 4) if name in runs else None

    base_ms = float(np.mean(ms["base_sample"])) if "base" in runs else 0.0
    record = {
        "benchmark": "steering", "seed": args.seed, "episodes_per_instruction": args.episodes,
        "oracle": {"k": 5, "episodes_per_instruction": args.oracle_episodes} if "oracle" in runs else None,
        "instructions": len(tasks),
        **{f"{name}_success": mean_of(name) for name in ("base", "vgps", "vgps_k50", "vgps_beta1", "oracle")},
        "steer_ms_per_step": round(float(np.mean(ms["vgps"])) - base_ms, 3) if "vgps" in ms else None,
        "ms_per_step": {name: round(float(np.mean(v)), 3) for name, v in ms.items()},
        "per_instruction": per_instruction,
        "openpi_round_trip": openpi,
        "critic": {"agent": args.agent, "relabel": args.relabel, "updates": critic.snapshot.step,
                   "language_encoder": "tiny random BERT (dojo.sim.tiny_language)"},
        "generalist": {"steps": args.generalist_steps, "chunk_len": GeneralistConfig().chunk_len},
        "data": {"episodes_per_instruction": args.data_episodes,
                 "success": round(data["success"], 4) if data else None},
        "timings_s": timings, "wall_s": round(time.monotonic() - started, 1), "cpu_count": os.cpu_count(),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
