"""Success classifier on pick_cube from the twin's front + wrist cameras, end to end: record, label, train, evaluate.

Training store: 20 scripted-expert episodes (all succeed) plus 40 operator episodes that mostly fail (20 from a
ScriptedOperator with lapses, skill 0.5, and 20 from one aiming 36 mm beside the cube), recorded with
env.randomize=true and without ending on success, so the twin's success signal marks every success frame
as an operator holding the success button would. Test store: fresh reset seeds (new scenes, lights, colours and
camera poses), labelled frame by frame by the twin's privileged success (no frame left out). Each seed trains
a classifier (`dojo reward train --kind classifier` defaults), picks its threshold on 20 % held-out training
episodes for a 1 % false-positive rate, and is scored on the test store; then the time of one batch-1 call
(both cameras) is measured.

Run: .venv/bin/python benchmarks/reward_classifier.py --out DIR [--seeds 0,1,2] [--image-size 64] [--color-jitter 0]
Prints one JSON line last. Stores and models stay in DIR; a later call reuses the stores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

TASK = "pick_cube"


def record_store(path: str, image_size: int, experts: int, lapsing: int, offset: int, seed: int,
                 randomize: bool = True) -> dict:
    """Expert, lapsing-operator and offset-operator episodes into one pixel store (episodes go on after success)."""
    from dojo.launch.cmd_record import record
    from dojo.replay.store import EpisodeWriter
    from dojo.sim import make_env
    from dojo.sim.experts import make_expert
    from dojo.sim.operators import ScriptedOperator

    env = make_env(TASK, obs_mode="pixels", image_size=(image_size, image_size), randomize=randomize,
                   terminate_on_success=False)
    writer = EpisodeWriter(path)
    try:
        out = {"expert": record(env, writer, experts, act=make_expert(env), seed=seed, operator="scripted-expert")}
        lapses = ScriptedOperator(env, skill=0.5, noise_std=0.1, seed=seed)
        out["lapsing"] = record(env, writer, lapsing, teleop=lapses, seed=seed + 10_000, operator="lapsing-operator")
        aside = ScriptedOperator(env, aim_offset_m=(0.036, 0.0, 0.0), seed=seed)
        out["offset"] = record(env, writer, offset, teleop=aside, seed=seed + 20_000, operator="offset-operator")
    finally:
        writer.close()
        env.close()
    return out


def ms_per_step(model, frames: dict, calls: int = 200) -> float:
    """Median wall time of one batch-1 score of every camera (after a warm-up call that compiles)."""
    one = {k: v[:1] for k, v in frames.items()}
    model.success(one)
    times = []
    for i in range(calls):
        sample = {k: v[i % len(v)][None] for k, v in frames.items()}
        t0 = time.perf_counter()
        model.success(sample)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main(argv=None) -> dict:
    from dojo.rewards.classifier import ClassifierConfig, train_classifier
    from dojo.rewards.evaluate import evaluate
    from dojo.rewards.labels import LabelRules, LabelSet, build_labels

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=ClassifierConfig.steps)
    p.add_argument("--color-jitter", type=float, default=ClassifierConfig.color_jitter,
                   help="per-image colour gain / brightness augmentation while training (0: off)")
    p.add_argument("--train-randomize", choices=("true", "false"), default="true",
                   help="false: train on the default scene only and test on randomised ones")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    suffix = "" if args.train_randomize == "true" else "_plain"
    # Names models and summaries: a colour jitter other than the classifier's default is in the name.
    tag = suffix + (f"_jitter{args.color_jitter:g}" if args.color_jitter != ClassifierConfig.color_jitter else "")
    train_store = os.path.join(args.out, f"train{suffix}.zarr")
    test_store = os.path.join(args.out, "test.zarr")
    recorded = {}
    t0 = time.monotonic()
    if not os.path.exists(train_store):
        recorded["train"] = record_store(train_store, args.image_size, 20, 20, 20, seed=1000,
                                         randomize=args.train_randomize == "true")
    if not os.path.exists(test_store):
        recorded["test"] = record_store(test_store, args.image_size, 10, 10, 10, seed=2000)
    record_s = time.monotonic() - t0

    train_labels = build_labels([train_store])
    train_labels.save(os.path.join(args.out, f"train{suffix}_labels.npz"))
    test_labels = build_labels([test_store], LabelRules(skip_before_success=0))  # every test frame judged
    test_labels.save(os.path.join(args.out, "test_labels.npz"))
    fit, held = train_labels.split(ClassifierConfig.holdout_fraction, seed=0)
    cameras = ("front", "wrist")
    fit_frames, held_frames = fit.frames(cameras), held.frames(cameras)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        t0 = time.monotonic()
        model = train_classifier(fit_frames, fit.label == 1, held_frames, held.label == 1,
                                 ClassifierConfig(cameras=cameras, steps=args.steps, seed=seed,
                                                  color_jitter=args.color_jitter),
                                 instructions=train_labels.instructions, progress=False)
        train_s = time.monotonic() - t0
        folder = os.path.join(args.out, f"classifier{tag}_seed{seed}")
        model.save(folder)
        result = evaluate(model, test_labels, worst_png=os.path.join(folder, "worst.png"))
        result["ms_per_step"] = ms_per_step(model, held_frames)
        result.update(seed=seed, train_s=round(train_s, 1), holdout=model.manifest.metrics)
        runs.append(result)
        print(json.dumps({k: result[k] for k in ("seed", "accuracy", "false_positive_rate", "recall", "precision",
                                                  "threshold", "ms_per_step", "train_s")}), flush=True)

    def spread(key):
        values = [r[key] for r in runs if r[key] is not None]
        return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}

    summary = {"task": TASK, "image_size": args.image_size, "train_randomize": args.train_randomize == "true",
               "steps": args.steps, "color_jitter": args.color_jitter, "record_s": round(record_s, 1),
               "recorded": recorded,
               "train_labels": train_labels.summary(), "test_labels": test_labels.summary(),
               "accuracy": spread("accuracy"), "false_positive_rate": spread("false_positive_rate"),
               "recall": spread("recall"), "precision": spread("precision"), "ms_per_step": spread("ms_per_step"),
               "runs": [{k: r[k] for k in ("seed", "accuracy", "false_positive_rate", "recall", "precision",
                                           "threshold", "confusion", "ms_per_step", "train_s", "holdout")}
                        for r in runs]}
    with open(os.path.join(args.out, f"summary{tag}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
