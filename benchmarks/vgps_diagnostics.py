"""Why V-GPS does (not) help: does the learned critic rank the generalist's candidates as the twin does?

Given a `benchmarks/steering.py --work DIR` folder (its store, generalist and critic), runs the base generalist
on each instruction's evaluation layouts and, every --every control steps, draws K candidate chunks and scores
them twice: with the critic (V-GPS's score, Q of each first action, min over heads) and with the twin's oracle
(benchmarks/steering.py's TwinOracle: each chunk run from the saved MuJoCo state). Prints one JSON line per
instruction and overall:

- `spearman`: mean rank correlation between the critic's and the oracle's scores over the candidates of a step
  (0: the critic ranks at random; 1: as the twin);
- `oracle_of_choice`, `oracle_mean`, `oracle_best`: the oracle's score of the critic's argmax, of a random
  candidate (what the base gets) and of the best candidate (what the oracle picks). The critic helps where
  `oracle_of_choice` exceeds `oracle_mean`; `capture` = (choice - mean) / (best - mean) is the share of the
  available gain it takes;
- `q_spread` and `q_state_std`: the critic's spread among one step's candidates against the spread of its
  value across the visited states (a critic that reads the state and ignores the action has a small ratio);
- against the twin's scripted expert at the same states: `expert_over_random` and `expert_over_noisy`, the
  share of (step, action) pairs where the critic rates the expert's action above a uniform random action or
  above the expert's plus N(0, 0.3) noise (coarse and finer discrimination); `expert_over_candidates`, the
  share of steps where it rates the expert's action above every candidate; `critic_vs_expert` and
  `oracle_vs_expert`, the rank correlations of each scorer with the candidates' closeness to the expert's
  action; `candidate_spread`, the candidates' mean L2 distance from their mean (first actions, canonical units).

Run: .venv/bin/python benchmarks/vgps_diagnostics.py DIR [--episodes 3] [--k 10] [--every 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from steering import TwinOracle, evaluation_seed  # noqa: E402


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation (ordinal ranks); None where either side rates every candidate alike."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) < 1e-9:
        return None
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def diagnose(task: str, generalist, critic, episodes: int, k: int, every: int, seed: int, max_steps: int) -> dict:
    from dojo.policies.spaces import CanonicalEnv
    from dojo.policies.steering import ChunkExecution
    from dojo.sim.envs import make_env
    from dojo.sim.multitask import INSTRUCTIONS
    from dojo.sim.operators import ScriptedOperator

    instruction = INSTRUCTIONS[task]
    env = CanonicalEnv(make_env(task, max_episode_steps=max_steps))
    oracle = TwinOracle(env)
    expert = ScriptedOperator(env)  # skill 1, no noise: the scripted expert, a function of the state
    rng = np.random.default_rng(seed)
    execution = ChunkExecution("ensemble", generalist.chunk_len)
    rows, successes = [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            execution.reset()
            done, success, t = False, False, 0
            while not done:
                chunks = generalist.unnormalize(generalist.sample(obs, instruction, k))
                if t % every == 0:
                    q = critic.score(obs, instruction, chunks)
                    o = oracle.score(obs, instruction, chunks)
                    rows.append({"rho": _spearman(q, o), "choice": o[int(np.argmax(q))], "mean": o.mean(),
                                 "best": o.max(), "q_spread": float(np.ptp(q)), "q_mean": float(q.mean()),
                                 "expert": _against_expert(critic, obs, instruction, chunks, q, o, expert.action(),
                                                           rng)})
                execution.push(chunks[0])  # the base: the first draw, as SteeredPolicy at K = 1
                obs, _, terminated, truncated, info = env.step(execution.next_action())
                success = success or bool(info.get("success", False))
                done, t = terminated or truncated, t + 1
            successes.append(success)
    finally:
        env.close()
    rho = [r["rho"] for r in rows if r["rho"] is not None]
    against = {key: _mean_of([r["expert"] for r in rows], key) for key in rows[0]["expert"]}
    choice, mean, best = (float(np.mean([r[key] for r in rows])) for key in ("choice", "mean", "best"))
    return {"instruction": instruction, "steps_scored": len(rows), "base_success": float(np.mean(successes)),
            "spearman": round(float(np.mean(rho)), 3) if rho else None, "ranked_steps": len(rho),
            "oracle_of_choice": round(choice, 4), "oracle_mean": round(mean, 4), "oracle_best": round(best, 4),
            "capture": round((choice - mean) / (best - mean), 3) if best > mean else None,
            "q_spread": round(float(np.mean([r["q_spread"] for r in rows])), 4),
            "q_state_std": round(float(np.std([r["q_mean"] for r in rows])), 4), **against}


def _mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return round(float(np.mean(values)), 4) if values else None


def _against_expert(critic, obs, instruction, chunks, q, o, expert_action, rng, n: int = 9) -> dict:
    """The critic's view of the scripted expert's action at one state (see the module's docstring)."""
    a = np.asarray(expert_action, np.float32)
    others = np.concatenate([rng.uniform(-1.0, 1.0, (n, a.size)),
                             np.clip(a + rng.normal(0.0, 0.3, (n, a.size)), -1.0, 1.0)]).astype(np.float32)
    qs = critic.q_values(obs, instruction, np.concatenate([a[None], others])).min(axis=0)
    first = np.asarray(chunks)[:, 0]
    closeness = -np.linalg.norm(first - a, axis=1)
    return {"expert_over_random": float((qs[0] > qs[1:n + 1]).mean()),
            "expert_over_noisy": float((qs[0] > qs[n + 1:]).mean()),
            "expert_over_candidates": float(qs[0] > q.max()),
            "critic_vs_expert": _spearman(q, closeness), "oracle_vs_expert": _spearman(o, closeness),
            "candidate_spread": float(np.linalg.norm(first - first.mean(0), axis=1).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", help="a `benchmarks/steering.py --work` folder (generalist.msgpack, critic/, lang/)")
    parser.add_argument("--seed", type=int, default=0, help="the seed steering.py ran with (its evaluation layouts)")
    parser.add_argument("--episodes", type=int, default=3, help="base episodes per instruction")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--every", type=int, default=5, help="score the candidates every this many control steps")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--tasks", default="", help="comma-separated scene tasks (default: all of them)")
    parser.add_argument("--critic", help="a critic snapshot (default: WORK/critic/policy.msgpack)")
    args = parser.parse_args()
    for name in ("episodes", "k", "every", "max_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    from dojo.policies.generalist import load_generalist
    from dojo.policies.language import load_language_encoder
    from dojo.policies.steering import Critic
    from dojo.sim.multitask import SCENE_TASKS

    work = Path(args.work)
    for need in ("generalist.msgpack", "lang/config.json"):
        if not (work / need).is_file():
            raise SystemExit(f"{work} has no {need}: give a folder that `benchmarks/steering.py --work` filled")
    tasks = [t for t in args.tasks.split(",") if t] or list(SCENE_TASKS)
    unknown = [t for t in tasks if t not in SCENE_TASKS]
    if unknown:
        parser.error(f"--tasks: unknown scene task(s) {unknown}; expected some of {sorted(SCENE_TASKS)}")
    try:
        critic = Critic(args.critic or str(work / "critic" / "policy.msgpack"), load_language_encoder(work / "lang"))
    except (OSError, ValueError) as err:
        raise SystemExit(f"vgps_diagnostics.py: {err}") from None
    results = []
    for task in tasks:
        generalist = load_generalist(work / "generalist.msgpack", seed=args.seed)
        results.append(diagnose(task, generalist, critic, args.episodes, args.k, args.every,
                                evaluation_seed(args.seed), args.max_steps))
        print(json.dumps({"benchmark": "vgps-diagnostics-instruction", **results[-1]}), file=sys.stderr)
    figures = [key for key in results[0] if key not in ("instruction", "steps_scored", "ranked_steps")]
    print(json.dumps({"benchmark": "vgps-diagnostics", "work": str(work), "k": args.k, "episodes": args.episodes,
                      "critic": args.critic or "critic/policy.msgpack",
                      **{key: _mean_of(results, key) for key in figures}, "per_instruction": results}))


if __name__ == "__main__":
    main()
