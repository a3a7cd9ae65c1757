"""VLM success classifier (RoboFuME) on the frames of reward_classifier.py: a small PaliGemma built from a config in
code (random weights: no pretrained VLM can be downloaded here), LoRA fine-tuned on the training label set
(`dojo reward train --kind vlm` defaults), its threshold chosen on held-out training episodes, then scored on the
randomised test store. Without pretrained weights this measures the pipeline (prompting, LoRA, threshold, the
time per label), not what a pretrained VLM would reach.

Run: .venv/bin/python benchmarks/reward_vlm.py --out DIR   (DIR of reward_classifier.py: its label sets and stores)
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402


def seconds_per_label(model, frames: dict, instruction: str, batch: int, calls: int = 20) -> float:
    """Median wall time of one score call on `batch` frame sets, divided by `batch`."""
    sample = {k: v[:batch] for k, v in frames.items()}
    model.score(sample, instruction)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model.score(sample, instruction)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) / batch)


def main(argv=None) -> dict:
    from dojo.rewards.evaluate import evaluate
    from dojo.rewards.labels import LabelSet
    from dojo.rewards.vlm import LoraSettings, VLMClassifier, train_vlm
    from dojo.sim.tiny_vlm import build_tiny_paligemma

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="reward_classifier.py's output folder")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=64, help="the vision tower's input side (frames are resized)")
    p.add_argument("--steps", type=int, default=LoraSettings.steps)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    train = LabelSet.load(os.path.join(args.out, "train_labels.npz"))
    test = LabelSet.load(os.path.join(args.out, "test_labels.npz"))
    base = build_tiny_paligemma(os.path.join(args.out, f"paligemma_h{args.hidden_size}"), hidden_size=args.hidden_size,
                                image_size=args.image_size, extra_text=train.instructions, seed=args.seed)
    cameras = ("front", "wrist")
    fit, held = train.split(0.2, seed=0)
    model = VLMClassifier.zero_shot(base, cameras, tuple(train.instructions))
    params = sum(p.numel() for p in model.vlm.model.parameters())
    held_frames = held.frames(cameras)
    t0 = time.monotonic()
    model = train_vlm(model, fit.frames(cameras), fit.label == 1, fit.instruction, train.instructions, held_frames,
                      held.label == 1, held.instruction, LoraSettings(steps=args.steps, seed=args.seed))
    train_s = time.monotonic() - t0
    folder = os.path.join(args.out, f"vlm_seed{args.seed}")
    model.save(folder)
    result = evaluate(model, test, worst_png=os.path.join(folder, "worst.png"))
    instruction = train.instructions[0]
    summary = {"model": "PaliGemma built from a config (random weights)", "hidden_size": args.hidden_size,
               "vision_image_size": args.image_size, "parameters": params, "lora_steps": args.steps,
               "train_s": round(train_s, 1), "holdout": model.manifest.metrics,
               **{k: result[k] for k in ("accuracy", "precision", "recall", "false_positive_rate", "confusion",
                                         "threshold")},
               "s_per_label_batch1": seconds_per_label(model, held_frames, instruction, 1),
               "s_per_label_batch32": seconds_per_label(model, held_frames, instruction, 32)}
    with open(os.path.join(args.out, "summary_vlm.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
