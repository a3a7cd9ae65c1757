"""Offline RL on a mixed pick_cube store (expert + noisy-operator episodes) through `dojo learn`: BC, IQL (its
published and its sparse-goal settings), Cal-QL and FQL offline, then Cal-QL fine-tuned online (demo_ratio 0.5)
and WSRL (from iql-sparse: frozen-policy warm-up, then online data only). Stage calql_calibration reads the
offline Cal-QL checkpoint: Q(s, a_data), Q(s, pi(s)) against the (scaled) Monte-Carlo returns, per kind of episode.

Run: .venv/bin/python benchmarks/learn_offline.py --out RUN [--stages offline,calql_online,wsrl,calql_calibration]
Each stage keeps its result in RUN/<stage>.json, so stages can run one at a time and a later call reuses
the store and checkpoints. Prints one JSON line last (every finished stage's figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from dojo import runs  # noqa: E402
from learn_pick_cube import FINAL_SEED, dojo  # noqa: E402

TASK = "pick_cube"
OFFLINE_AGENTS = ("bc", "iql", "iql-sparse", "calql", "fql")  # presets of dojo/learners/__init__.py
STAGES = ("offline", "calql_online", "wsrl", "calql_calibration")


def record_mixed_store(path: str, experts: int, noisy: int, skill: float, noise_std: float, seed: int) -> dict:
    """`experts` scripted-expert episodes, then `noisy` from a ScriptedOperator with lapses and noise.

    All are stored with source "demo": the whole store is the offline data set, so an online batch's
    demo share (Cal-QL's 0.5) draws from all of it. The operator field tells them apart."""
    from dojo.launch.cmd_record import record
    from dojo.replay.store import EpisodeWriter
    from dojo.sim.envs import make_env
    from dojo.sim.experts import make_expert
    from dojo.sim.operators import ScriptedOperator

    env = make_env("pick_cube")
    writer = EpisodeWriter(path)
    try:
        expert = record(env, writer, experts, act=make_expert(env), seed=seed, operator="scripted-expert")
        operator = ScriptedOperator(env, skill=skill, noise_std=noise_std, seed=seed)
        sloppy = record(env, writer, noisy, teleop=operator, seed=seed + 100_000, operator="noisy-operator")
    finally:
        writer.close()
        env.close()
    return {"expert": expert, "noisy": sloppy}


def _save(out: str, name: str, result: dict) -> None:
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)


def _fresh(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)  # a stage runs from scratch; `dojo learn` would resume it
    return path


def _evals(run: str) -> list[dict]:
    return [r for r in runs.read_progress(run) if "eval_success_rate" in r]


def stage_offline(args, store: str, overrides: dict) -> dict:
    """Each agent (preset) for the same number of updates through `dojo learn --offline`, then the snapshot on
    --final-episodes fresh episodes."""
    results = {}
    for name in args.agents:
        run = _fresh(os.path.join(args.out, f"offline_{name}"))
        options = [f"--set={kv}" for kv in overrides.get(name, [])]
        dojo("learn", "--offline", "--sim", TASK, "--data", store, "--agent", name, *options, "--seed", args.seed,
             "--steps", args.offline_updates, "--eval-every", args.offline_eval_every,
             "--eval-episodes", args.eval_episodes, "--no-progress", "--out", run)
        final = dojo("eval", "--run", run, "--episodes", args.final_episodes, "--seed", FINAL_SEED)
        last = runs.read_progress(run)[-1]
        results[name] = {"updates": args.offline_updates, "train_wall_s": last["train_wall_s"],
                         "updates_per_s": round(args.offline_updates / last["train_wall_s"], 1),
                         "success_rate": final["success_rate"], "return_mean": final["return_mean"],
                         "overrides": overrides.get(name, []),
                         "curve": [(r["updates"], r["eval_success_rate"]) for r in _evals(run)],
                         "last_info": {k: v for k, v in last.items() if k not in ("updates", "wall_s")}}
        print(json.dumps({"offline": name, **results[name]}), flush=True)
    return results


def stage_online(args, name: str, init: str, learn_args: list[str]) -> dict:
    """Online fine-tuning through `dojo learn --init` for --online-steps env steps, then the snapshot on
    --final-episodes fresh episodes."""
    run = _fresh(os.path.join(args.out, name))
    start = dojo("eval", "--run", init, "--sim", TASK, "--episodes", args.eval_episodes, "--seed", FINAL_SEED)
    summary = dojo("learn", "--sim", TASK, "--init", init, "--seed", args.seed, "--steps", args.online_steps,
                   "--eval-every", args.eval_every, "--eval-episodes", args.eval_episodes, "--no-progress",
                   "--out", run, *learn_args)
    final = dojo("eval", "--run", run, "--episodes", args.final_episodes, "--seed", FINAL_SEED)
    rows = _evals(run)
    result = {"init": os.path.relpath(init, args.out), "learn_args": learn_args, "env_steps": summary["env_steps"],
              "updates": summary["updates"], "train_wall_s": rows[-1]["train_wall_s"],
              "start_success_rate": start["success_rate"], "final_success_rate": final["success_rate"],
              "final_episodes": args.final_episodes,
              "curve": [(0, start["success_rate"])] + [(r["env_steps"], r["eval_success_rate"]) for r in rows],
              "online_success_curve": [(r["env_steps"], r["success_rate"]) for r in rows]}
    print(json.dumps({name: result}), flush=True)
    return result


def calql_calibration(run: str, store: str) -> dict:
    """Mean Q(s, a_data), Q(s, pi(s)) (the deterministic policy) and the Monte-Carlo return Cal-QL bounds them
    with (reward_scale / reward_bias applied), over all steps and over first steps, for the expert episodes and
    the noisy operator's successes and failures: whether the critic ranks them as their returns do."""
    import numpy as np

    from dojo.learners import calql, checkpoint, common
    from dojo.replay.store import open_store

    agent, _ = checkpoint.load_checkpoint(os.path.join(run, "checkpoints", "learner.ckpt"))
    cfg, reader = agent.config, open_store(store)
    episodes = reader.read_episodes(0, reader.num_episodes)
    obs = {k: np.concatenate([e.obs[k][:-1] for e in episodes]) for k in episodes[0].obs}
    data_action = np.concatenate([e.action for e in episodes])
    _, mc = calql.scale_rewards(0.0, np.concatenate([e.mc_return for e in episodes]), cfg.reward_scale,
                                cfg.reward_bias, cfg.discount)
    lengths = [len(e.action) for e in episodes]
    operator = np.repeat([e.info.operator for e in episodes], lengths)
    success = np.repeat([e.info.success for e in episodes], lengths)
    first = np.concatenate([np.arange(n) == 0 for n in lengths])
    policy_action = np.asarray(agent.sample_actions(obs))
    critic = agent.modules[1]
    norm_obs = common.preprocess(agent, None, obs, False)
    q_data, q_pi = (np.asarray(critic.apply({"params": agent.critic_params}, norm_obs, a).min(0))
                    for a in (data_action, policy_action))
    result = {"updates": int(agent.step), "reward_scale": cfg.reward_scale, "reward_bias": cfg.reward_bias}
    expert = operator == "scripted-expert"
    for name, group in (("expert", expert), ("noisy_success", ~expert & success), ("noisy_failure", ~expert & ~success)):
        result[name] = {where: {k: round(float(v[group & rows].mean()), 1) for k, v in
                                (("q_data", q_data), ("q_pi", q_pi), ("mc_return", np.asarray(mc)))}
                        for where, rows in (("all_steps", np.ones_like(first)), ("first_steps", first))}
    result["first_step_policy_vs_expert_action"] = np.round(
        np.abs(policy_action - data_action)[expert & first].mean(0), 2).tolist()
    print(json.dumps({"calql_calibration": result}), flush=True)
    return result


def plot(out: str, results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
    offline = results.get("offline", {})
    if offline:
        names = list(offline)
        axes[0].bar(names, [offline[n]["success_rate"] for n in names])
        updates = sorted({offline[n]["updates"] for n in names})
        span = str(updates[0]) if len(updates) == 1 else f"{updates[0]}-{updates[-1]}"
        axes[0].set_title(f"offline, {span} updates", fontsize=9)
        axes[0].tick_params(axis="x", labelrotation=30, labelsize=8)
    axes[0].set_ylabel("success rate (deterministic, 50 episodes)")
    for stage in ("calql_online", "wsrl"):
        if stage in results:
            curve = results[stage]["curve"]
            init = results[stage]["init"].split(os.sep)[0].replace("offline_", "")
            axes[1].plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=f"{stage} (from {init})")
    axes[1].set_xlabel("online env steps")
    axes[1].set_title("online fine-tuning from an offline checkpoint (10-episode checks)", fontsize=9)
    if axes[1].lines:
        axes[1].legend()
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run directory (store, checkpoints, per-stage JSON)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {STAGES}")
    p.add_argument("--agents", default=",".join(OFFLINE_AGENTS), help="offline agents to train")
    p.add_argument("--experts", type=int, default=50)
    p.add_argument("--noisy", type=int, default=200)
    p.add_argument("--skill", type=float, default=0.75, help="ScriptedOperator skill of the noisy episodes")
    p.add_argument("--noise-std", type=float, default=0.1, help="ScriptedOperator action noise (action units)")
    p.add_argument("--offline-updates", type=int, default=3000)
    p.add_argument("--offline-eval-every", type=int, default=0,
                   help="evaluate every N offline updates on --eval-episodes (curve in RUN/offline_AGENT/progress.jsonl)")
    p.add_argument("--set", action="append", default=[], metavar="AGENT.KEY=VALUE",
                   help="option override for one agent (preset), e.g. calql.cql_alpha=1.0")
    p.add_argument("--online-steps", type=int, default=10_000)
    p.add_argument("--wsrl-init", choices=OFFLINE_AGENTS, default="iql-sparse",
                   help="the offline run WSRL starts from (IQL with its sparse-goal settings: 94 %% offline)")
    p.add_argument("--wsrl-warmup", type=int, default=2000, help="env steps of the frozen policy before updates")
    p.add_argument("--wsrl-set", action="append", default=[], metavar="KEY=VALUE",
                   help="option overrides for WSRL's online phase (from Cal-QL: cql_alpha=0.0, no conservative "
                        "term online)")
    p.add_argument("--learning-starts", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=2500)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--final-episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default="", help="where to draw the curves (default OUT/learn_offline.png; the "
                                              "committed figure is benchmarks/results/learn_offline.png)")
    args = p.parse_args(argv)
    args.agents = [a for a in args.agents.split(",") if a]
    stages = [s for s in args.stages.split(",") if s]
    for bad in [s for s in stages if s not in STAGES] + [a for a in args.agents if a not in OFFLINE_AGENTS]:
        raise ValueError(f"unknown stage or agent {bad!r}; expected stages from {STAGES}, agents from {OFFLINE_AGENTS}")
    overrides: dict[str, list[str]] = {}
    for item in args.set:
        agent, _, option = item.partition(".")
        if agent not in OFFLINE_AGENTS or "=" not in option:
            raise ValueError(f"--set must be AGENT.KEY=VALUE with AGENT in {OFFLINE_AGENTS}, got {item!r}")
        overrides.setdefault(agent, []).append(option)

    os.makedirs(args.out, exist_ok=True)
    store = os.path.join(args.out, "mixed.zarr")
    if not os.path.exists(store):
        t0 = time.monotonic()
        rec = record_mixed_store(store, args.experts, args.noisy, args.skill, args.noise_std, seed=50_000)
        _save(args.out, "store", {**rec, "skill": args.skill, "noise_std": args.noise_std,
                                  "record_wall_s": round(time.monotonic() - t0, 1)})
    t0 = time.monotonic()
    if "offline" in stages:  # merged with agents trained by earlier calls
        path = os.path.join(args.out, "offline.json")
        earlier = json.load(open(path)) if os.path.exists(path) else {}
        _save(args.out, "offline", {**earlier, **stage_offline(args, store, overrides)})
    common = [f"--learning-starts={args.learning_starts}"]
    if "calql_online" in stages:
        _save(args.out, "calql_online", stage_online(args, "calql_online", os.path.join(args.out, "offline_calql"),
                                                     common + ["--demos", store, "--demo-ratio", "0.5"]))
    if "wsrl" in stages:
        init = os.path.join(args.out, f"offline_{args.wsrl_init}")
        _save(args.out, "wsrl", stage_online(args, "wsrl", init, [
            f"--warmup={args.wsrl_warmup}", "--demo-ratio", "0", *[f"--set={kv}" for kv in args.wsrl_set]]))
    if "calql_calibration" in stages:
        _save(args.out, "calql_calibration", calql_calibration(os.path.join(args.out, "offline_calql"), store))

    results = {name: json.load(open(os.path.join(args.out, f"{name}.json")))
               for name in ("store",) + STAGES if os.path.exists(os.path.join(args.out, f"{name}.json"))}
    plot(args.out, results, args.plot or os.path.join(args.out, "learn_offline.png"))
    summary = {"task": TASK, "stages_run": stages, "wall_s": round(time.monotonic() - t0, 1),
               "store": results.get("store"),
               "offline": {k: {f: v[f] for f in ("updates", "success_rate", "train_wall_s")}
                           for k, v in results.get("offline", {}).items()},
               **{s: {f: results[s][f] for f in ("env_steps", "start_success_rate", "final_success_rate", "curve")}
                  for s in ("calql_online", "wsrl") if s in results},
               **({"calql_calibration": results["calql_calibration"]} if "calql_calibration" in results else {})}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
