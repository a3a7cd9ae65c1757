r"""Interventions on pick_cube (state observations), through the real actor/learner system (`dojo train`).

Arms, each at the same env-step budget:
  rlif+hil    as rlif, and the operator's corrections also sampled (and cloned) as demos (intervention.mode=both)
  rlif        the twin's intervening operator (own success ~50%: action noise 0.55, or with `--noise-std 0
              --aim-offset-m 0.036,0,0` aiming 36 mm beside the cube every time) watches the policy; RLIF's reward
              (-1 on the step before each takeover, no task reward), no demos
  operator    the same operator acting alone: its own success rate
  bc          BC (HG-DAgger style) trained on the operator's intervention steps from the rlif run
  hil-serl    20 scripted demos + an intervening operator (skill 1.0); intervened steps also sampled as demos
  rlpd        20 scripted demos, no interventions
Prints one JSON line. The defaults are the first operator tried (noisy, deviation rule, SAC); the RLIF
measure in benchmarks/results/README.md (RLIF beats the operator and BC in 2 of 4 seeds; add --rlif-set seed=N)
uses an operator that aims beside the cube:

    .venv/bin/python benchmarks/learn_interventions.py --env-steps 12000 --arms operator,rlif,bc --noise-std 0 \
        --aim-offset-m 0.036,0,0 --rule value --rlif-set agent.name=iql-sparse --rlif-set agent.iql.reward_shift=0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dojo.replay.sampler import ReplayMirror

CLI = [sys.executable, "-m", "dojo.launch.cli"]


def train(run: Path, overrides: list[str]) -> dict:
    out = subprocess.run(CLI + ["train", "--sim", "pick_cube", "--run", str(run), *overrides],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"dojo train failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def operator_success(episodes: int, skill: float, noise_std: float, aim_offset_m: list[float]) -> float:
    from dojo.sim import make_env
    from dojo.sim.operators import ScriptedOperator, run_episodes

    env = make_env("pick_cube")
    return run_episodes(env, ScriptedOperator(env, skill, noise_std, seed=0, aim_offset_m=aim_offset_m), episodes,
                        seed=2_000_000)["success_rate"]


def offset_m(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected x,y,z in metres such as 0,0,0.0165, got {text!r}")
    return values


def bc_on_interventions(store: Path, updates: int, episodes: int) -> dict:
    """HG-DAgger: behaviour cloning on the steps where the operator was in control."""
    mirror = ReplayMirror()
    mirror.follow(store, copy_interventions=True)  # the intervened runs, held as demo-source episodes
    return {"success_rate": train_offline(mirror, "bc", {}, updates, episodes, {"demo": 1.0}),
            "intervention_steps": mirror.steps_by_source()["demo"]}


def train_offline(mirror, preset: str, options: dict, updates: int, episodes: int, ratio: dict | None) -> float:
    """An agent trained on a mirror built by the caller (relabelled, interventions copied: what the one
    learner's stores do not offer), then its success on pick_cube without an operator."""
    from dojo.learners import make_agent
    from dojo.learners.learner import LivePolicy
    from dojo.policies.evaluation import evaluate, policy_act
    from dojo.sim import make_env

    env = make_env("pick_cube")
    agent = make_agent(preset, env.observation_space, env.action_space, overrides=options)
    rng = np.random.default_rng(0)
    for _ in range(updates):
        batch = mirror.sample(agent.config.batch_size * getattr(agent.config, "utd_ratio", 1), rng,
                              gamma=agent.config.discount, source_ratio=ratio)
        agent, _ = agent.update(batch)
    policy = LivePolicy(lambda: agent, seed=0)
    return evaluate(env, policy_act(policy), episodes, seed=1_000_000)["success_rate"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-steps", type=int, default=8000)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--noise-std", type=float, default=0.55,
                        help="the RLIF operator's action noise (~50%% own success)")
    parser.add_argument("--skill", type=float, default=1.0,
                        help="the RLIF operator's skill (0.75: a 5-step random lapse on 1 step in 4, ~50%% own "
                             "success)")
    parser.add_argument("--aim-offset-m", type=offset_m, default=[0.0, 0.0, 0.0], metavar="X,Y,Z",
                        help="the RLIF operator's misjudgement of the cube's position (0.036,0,0 or 0,0,0.0165: "
                             "~50%% own success)")
    parser.add_argument("--rule", choices=("deviation", "value"), default="deviation",
                        help="the RLIF operator's intervention rule")
    parser.add_argument("--bc-updates", type=int, default=5000)
    parser.add_argument("--arms", default="operator,rlif,bc,rlif+hil,hil-serl,rlpd")
    parser.add_argument("--rlif-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `dojo train` overrides for the rlif and rlif+hil arms, e.g. agent.name=iql")
    parser.add_argument("--keep", help="keep the runs in this directory (default: a temporary one)")
    args = parser.parse_args()
    arms = args.arms.split(",")
    common = [f"learner.env_steps={args.env_steps}", f"eval.episodes={args.eval_episodes}"]
    rlif_operator = ["intervention.operator=sim", f"intervention.skill={args.skill}",
                     f"intervention.noise_std={args.noise_std}",
                     f"intervention.aim_offset_m=[{','.join(map(str, args.aim_offset_m))}]",
                     f"intervention.rule={args.rule}", "demos.episodes=0", *args.rlif_set]
    results, started = {}, time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.keep or tmp)
        if "operator" in arms:
            results["operator"] = {"success_rate": operator_success(args.eval_episodes, args.skill, args.noise_std,
                                                                    args.aim_offset_m)}
        if "rlif" in arms or "bc" in arms:
            results["rlif"] = train(runs / "rlif", common + ["intervention.mode=rlif", *rlif_operator])
            if "bc" in arms:
                results["bc"] = bc_on_interventions(runs / "rlif" / "replay" / "actor-0.zarr", args.bc_updates,
                                                    args.eval_episodes)
        if "rlif+hil" in arms:  # RLIF's reward, and the corrections also sampled (and cloned) as demos
            results["rlif+hil"] = train(runs / "rlif+hil", common + ["intervention.mode=both", *rlif_operator])
        if "hil-serl" in arms:
            results["hil-serl"] = train(runs / "hil-serl", common + [
                "intervention.mode=hil-serl", "intervention.operator=sim", "intervention.skill=1.0"])
        if "rlpd" in arms:
            results["rlpd"] = train(runs / "rlpd", common)
    print(json.dumps({"benchmark": "learn_interventions", "task": "pick_cube", "env_steps": args.env_steps,
                      "operator_skill": args.skill, "operator_noise_std": args.noise_std,
                      "operator_aim_offset_m": args.aim_offset_m, "operator_rule": args.rule,
                      "rlif_overrides": args.rlif_set,
                      **{f"{arm}_success_rate": r.get("success_rate") for arm, r in results.items()},
                      "runs": results, "wall_s": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
