"""Preference reward on the mixed pick_cube store of learn_offline.py: the twin's simulated labeller (privileged
progress, a configurable share of wrong answers) compares random frame pairs, a Bradley-Terry ensemble of 3 is
fitted (`dojo reward train --kind preference --inputs state`), the store's rewards are replaced by its reward only
(`dojo replay relabel`), and IQL with its sparse-goal settings (`iql-sparse`, 3,000 updates) learns offline; the
policy is then evaluated on 50 fresh episodes. Variants: `bt` (the measure), `bt_no_terminal` (the same rewards in
a copy of the store whose success steps are not terminal: the store's terminal flags come from the twin's
success, which on their own tell IQL where success is), `zero` (every reward 0, terminals kept: what the
terminals alone give) and `true` (the recorded rewards).

Run: .venv/bin/python benchmarks/reward_preference.py --out DIR [--seeds 0,1,2] [--variants bt,bt_no_terminal]
Prints one JSON line last; each run's result stays in DIR/<variant>_seed<S>.json and is reused by later calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

from learn_offline import record_mixed_store  # noqa: E402
from learn_pick_cube import FINAL_SEED, dojo  # noqa: E402  (FINAL_SEED: the evaluation's reset seeds)

VARIANTS = ("bt", "bt_no_terminal", "zero", "true")


def copy_without_terminals(src: str, dst: str) -> None:
    """The store again, every step non-terminal (an episode that ended on success is truncated there instead)."""
    from dojo.replay.store import EpisodeWriter, StoreReader

    reader = StoreReader(src)
    with EpisodeWriter(dst, mc_gamma=reader.mc_gamma, failure_reward=reader.failure_reward) as writer:
        for ep in reader.read_episodes(0, reader.num_episodes):
            info = ep.info
            writer.begin_episode(source=info.source, task=info.task, instruction=info.instruction,
                                 operator=info.operator, robot=info.robot, reset_seed=info.reset_seed)
            for t in range(info.num_steps):
                last = t == info.num_steps - 1
                writer.add_step({k: v[t] for k, v in ep.obs.items()}, ep.action[t], ep.reward[t], False,
                                bool(ep.truncated[t] or (last and ep.terminal[t])), bool(ep.intervened[t]))
            writer.end_episode({k: v[-1] for k, v in ep.obs.items()}, info.success)


def reward_quality(model_dir: str, store: str) -> dict:
    """How the relabelled reward ranks frames against the twin's true progress (Spearman) and how it separates
    success frames from the rest."""
    from dojo.replay.store import StoreReader
    from dojo.rewards.base import load_reward_model
    from dojo.sim.labeller import SimLabeller, progress_from_state

    reader = StoreReader(store)
    state = reader.read("obs/state", 0, reader.num_rows)
    model = load_reward_model(model_dir)
    reward = np.concatenate([model.score({"state": state[i:i + 4096]}) for i in range(0, len(state), 4096)])
    progress = progress_from_state("pick_cube", state)
    ranks = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    spearman = float(np.corrcoef(ranks(reward), ranks(progress))[0, 1])
    success = progress >= 1.0
    # Agreement with error-free answers on fresh pairs.
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, len(state), 20_000), rng.integers(0, len(state), 20_000)
    truth = SimLabeller("pick_cube", error_rate=0.0).true_answers({"state": state[a]}, {"state": state[b]})
    sure = truth >= 0
    agree = float(np.mean((reward[b] > reward[a])[sure] == (truth[sure] == 1)))
    return {"spearman_vs_progress": round(spearman, 4), "true_pair_agreement": round(agree, 4),
            "reward_mean_success_frames": float(reward[success].mean()) if success.any() else None,
            "reward_mean_other_frames": float(reward[~success].mean())}


def evaluate_policy(run_dir: str, episodes: int) -> dict:
    """`dojo eval`'s evaluation of a state-obs pick_cube run (deterministic, reset seeds from FINAL_SEED), built
    here from the twin's defaults rather than from the run's saved config."""
    from dojo.policies.evaluation import evaluate_run
    from dojo.policies.spaces import CanonicalEnv
    from dojo.sim import make_env

    env = CanonicalEnv(make_env("pick_cube"), "success")
    try:
        return evaluate_run(run_dir, env, episodes, seed=FINAL_SEED)
    finally:
        env.close()


def _trained(learn: str, updates: int) -> bool:
    from dojo import runs

    return os.path.exists(os.path.join(learn, runs.SNAPSHOT)) and runs.read_progress(learn)[-1]["updates"] >= updates


def run(args, variant: str, seed: int, store: str) -> dict:
    path = os.path.join(args.out, f"{variant}_seed{seed}.json")
    if os.path.exists(path):
        return json.load(open(path))
    work = os.path.join(args.out, f"{variant}_seed{seed}")
    data = os.path.join(work, "store.zarr")
    learn = os.path.join(work, "iql")
    result = {"variant": variant, "seed": seed}
    if os.path.isdir(learn) and _trained(learn, args.updates):  # an earlier call got as far as the evaluation
        if variant.startswith("bt"):
            model = os.path.join(work, "reward")
            result["reward_model"] = json.load(open(os.path.join(model, "manifest.json")))["metrics"]
            result["reward_quality"] = reward_quality(model, store)
        return _finish(args, result, learn, data, path)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    if variant == "bt_no_terminal":
        copy_without_terminals(store, data)
    else:
        shutil.copytree(store, data)
    if variant.startswith("bt"):
        model = os.path.join(work, "reward")
        trained = dojo("reward", "train", "--kind", "preference", "--data", store, "--inputs", "state",
                       "--labeller", "sim", "--error-rate", args.error_rate, "--queries", args.queries,
                       "--seed", seed, "--out", model)
        result["reward_model"] = trained
        result["reward_quality"] = reward_quality(model, store)
        result["relabel"] = dojo("replay", "relabel", data, "--reward", model)
    elif variant == "zero":
        from dojo.replay.store import relabel_rewards

        relabel_rewards(data, lambda ep: np.zeros_like(ep.reward), reward_source="constant:zero")
    dojo("learn", "--offline", "--sim", "pick_cube", "--data", data, "--agent", "iql-sparse", "--seed", seed,
         "--steps", args.updates, "--no-progress", "--out", learn)
    return _finish(args, result, learn, data, path)


def _finish(args, result: dict, learn: str, data: str, path: str) -> dict:
    result["success_rate"] = evaluate_policy(learn, args.final_episodes)["success_rate"]
    shutil.rmtree(data, ignore_errors=True)  # the copies are large next to the result; the model and run stay
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("variant", "seed", "success_rate")}), flush=True)
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="bt,bt_no_terminal")
    p.add_argument("--error-rate", type=float, default=0.1)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--updates", type=int, default=3000)
    p.add_argument("--final-episodes", type=int, default=50)
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    for bad in [v for v in variants if v not in VARIANTS]:
        raise ValueError(f"unknown variant {bad!r}; expected some of {VARIANTS}")
    os.makedirs(args.out, exist_ok=True)
    store = os.path.join(args.out, "mixed.zarr")
    if not os.path.exists(store):  # learn_offline.py's store: the same counts, operator and seed
        record_mixed_store(store, 50, 200, 0.75, 0.1, seed=50_000)
    results = {v: [run(args, v, int(s), store) for s in args.seeds.split(",") if s] for v in variants}
    summary = {"task": "pick_cube", "error_rate": args.error_rate, "queries": args.queries, "updates": args.updates,
               "final_episodes": args.final_episodes}
    for v, rows in results.items():
        rates = [r["success_rate"] for r in rows]
        summary[v] = {"success_rate_mean": float(np.mean(rates)), "min": float(np.min(rates)),
                      "max": float(np.max(rates)), "per_seed": rates}
        if v.startswith("bt"):
            summary[v]["reward_quality"] = [r["reward_quality"] for r in rows]
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
