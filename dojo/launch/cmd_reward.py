"""`dojo reward label|train|eval`: labelled frame sets from stores, camera reward models trained on them or on
a labeller's preferences, and their agreement with held-out labels."""

from __future__ import annotations

import argparse
import json
import sys

KINDS = ("classifier", "vlm", "contrastive", "preference")


def _csv(text: str) -> tuple[str, ...]:
    items = tuple(s for s in text.split(",") if s)
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    reward = subparsers.add_parser("reward", help="reward models from cameras: label frames, train, evaluate")
    commands = reward.add_subparsers(dest="reward_command", required=True, metavar="SUBCOMMAND")

    label = commands.add_parser(
        "label", help="build a labelled frame set from stores (episode outcomes, success marks)",
        description="Label every frame of the stores' closed episodes: the final frames of successful episodes and "
                    "the frames an operator marked as success (a step whose reward reached --mark-reward marks its "
                    "next frame) are positives, all others negatives, except the --skip-before-success frames just "
                    "before each success, which are left out (RoboFuME). Rewards written by a reward model are "
                    "never taken as marks. Prints one JSON line.")
    label.add_argument("stores", nargs="+", metavar="STORE")
    label.add_argument("--out", required=True, metavar="LABELS.npz")
    label.add_argument("--final-frames", type=int, default=1, help="last frames of a successful episode taken as "
                                                                    "positives")
    label.add_argument("--marks", choices=("reward", "none"), default="reward",
                       help="reward: steps with reward >= --mark-reward mark their next frame as success")
    label.add_argument("--mark-reward", type=float, default=1.0)
    label.add_argument("--skip-before-success", type=int, default=5, metavar="N",
                       help="frames before each success left out of the negatives")
    label.set_defaults(func=_label)

    train = commands.add_parser(
        "train", help="train a reward model: classifier, vlm (LoRA), contrastive (zero-shot) or preference",
        description="classifier / vlm / contrastive learn from a label set (--labels) and choose their threshold on "
                    "held-out episodes for --target-fpr; vlm and contrastive start from a local model folder "
                    "(--base; a hub id is refused: nothing downloads). preference asks a labeller (--labeller sim: "
                    "the twin's, from privileged state; or a local VLM folder) about random frame pairs of --data "
                    "stores and fits a Bradley-Terry ensemble. Writes MODEL/manifest.json and prints one JSON line.")
    train.add_argument("--kind", choices=KINDS, required=True)
    train.add_argument("--out", required=True, metavar="MODEL", help="model folder (re-training bumps its version)")
    train.add_argument("--labels", metavar="LABELS.npz", help="label set from `dojo reward label` (not preference)")
    train.add_argument("--cameras", type=_csv, default=("front", "wrist"), help="cameras read, comma-separated")
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the kind's; vlm 0 = "
                                                                "zero-shot)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--target-fpr", type=float, default=0.01, help="false-positive rate the threshold is chosen "
                                                                        "for on held-out episodes")
    train.add_argument("--holdout-fraction", type=float, default=0.2, help="share of episodes held out")
    train.add_argument("--state-check", action="append", default=[], metavar="INDEX:MIN:MAX[:NAME]",
                       help="proprioceptive condition ANDed into success, e.g. 13::0.045:gripper_width_m")
    train.add_argument("--color-jitter", type=float, default=None, metavar="STRENGTH",
                       help="classifier: per-image colour gain / brightness augmentation while training "
                            "(default: the classifier's; 0 turns it off)")
    train.add_argument("--pretrained-encoder", default="", metavar="FILE",
                       help="classifier: frozen conv trunk from a local file (networks.save_pretrained_trunk)")
    train.add_argument("--base", metavar="FOLDER", help="vlm / contrastive: local model folder")
    train.add_argument("--data", nargs="+", metavar="STORE", help="preference: stores whose frames are compared")
    train.add_argument("--inputs", type=_csv, default=None,
                       help="preference: observation keys the reward reads (default: --cameras; 'state' for "
                            "proprioception + task features)")
    train.add_argument("--labeller", default="sim", help="preference: 'sim' or a local VLM folder")
    train.add_argument("--error-rate", type=float, default=0.1, help="preference, sim labeller: wrong answers")
    train.add_argument("--queries", type=int, default=None, help="preference: frame pairs asked")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "eval", help="accuracy, precision, recall, false-positive rate and confusion table on a label set",
        description="Score every frame of a label set with a success model and compare with its labels. Prints the "
                    "confusion table, then one JSON line; --worst-png writes the most confident mistakes.")
    evaluate.add_argument("--model", required=True, metavar="MODEL")
    evaluate.add_argument("--labels", required=True, metavar="LABELS.npz")
    evaluate.add_argument("--worst-png", default=None, metavar="FILE.png")
    evaluate.set_defaults(func=_eval)


def _tty() -> bool:
    return sys.stderr.isatty()


def _label(args: argparse.Namespace) -> int:
    from dojo.rewards.labels import LabelRules, build_labels

    rules = LabelRules(final_frames=args.final_frames, marks=args.marks, mark_reward=args.mark_reward,
                       skip_before_success=args.skip_before_success)
    labels = build_labels(args.stores, rules)
    labels.save(args.out)
    print(json.dumps({"labels": args.out, **labels.summary()}))
    return 0


def _train(args: argparse.Namespace) -> int:
    from dojo.rewards.base import StateCheck

    checks = tuple(StateCheck.parse(c) for c in args.state_check)
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if args.kind == "preference":
        model = _train_preference(args)
    else:
        model = _train_success(args, checks)
    if checks:
        import dataclasses

        model.manifest = dataclasses.replace(model.manifest, state_check=checks)
    manifest = model.save(args.out)
    print(json.dumps({"model": args.out, "kind": manifest.kind, "id": manifest.id, "version": manifest.version,
                      "reward_source": manifest.reward_source, "threshold": manifest.threshold,
                      "inputs": list(manifest.inputs), **manifest.metrics}))
    return 0


def _need(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) is None:
            raise ValueError(f"dojo reward train --kind {args.kind} needs --{name.replace('_', '-')}")


def _train_success(args: argparse.Namespace, checks: tuple):
    from dojo.rewards.base import data_ids
    from dojo.rewards.labels import LabelSet, open_labelled_store

    _need(args, "labels")
    labels = LabelSet.load(args.labels)
    fit, held = labels.split(args.holdout_fraction, seed=args.seed)
    data = data_ids([open_labelled_store(m) for m in labels.stores])
    cameras = args.cameras
    if args.kind == "classifier":
        from dojo.rewards.classifier import ClassifierConfig, train_classifier

        config = ClassifierConfig(cameras=cameras, pretrained_encoder=args.pretrained_encoder,
                                  target_fpr=args.target_fpr, holdout_fraction=args.holdout_fraction, seed=args.seed,
                                  **({"steps": args.steps} if args.steps else {}),
                                  **({} if args.color_jitter is None else {"color_jitter": args.color_jitter}))
        return train_classifier(fit.frames(cameras, progress=_tty()), fit.label == 1,
                                held.frames(cameras, progress=_tty()), held.label == 1, config,
                                instructions=labels.instructions, data=data, state_check=checks)
    _need(args, "base")
    from dojo.rewards.metrics import binary_metrics, choose_threshold
    from dojo.rewards.vlm import ContrastiveScorer, LoraSettings, VLMClassifier, train_vlm

    if args.kind == "vlm":
        model = VLMClassifier.zero_shot(args.base, cameras, tuple(labels.instructions))
        settings = LoraSettings(target_fpr=args.target_fpr, seed=args.seed,
                                **({} if args.steps is None else {"steps": args.steps}))
        return train_vlm(model, fit.frames(cameras, progress=_tty()), fit.label == 1, fit.instruction,
                         labels.instructions, held.frames(cameras, progress=_tty()), held.label == 1,
                         held.instruction, settings, data=data)
    # contrastive: nothing to train, only the threshold to choose on the held-out frames.
    import dataclasses

    from dojo.rewards.evaluate import predict

    model = ContrastiveScorer.zero_shot(args.base, cameras, tuple(labels.instructions))
    scores, _ = predict(model, held.frames(cameras, progress=_tty()), labels.instructions, held.instruction)
    actual = held.label == 1
    threshold = choose_threshold(scores[~actual], args.target_fpr, min_threshold=0.5)
    metrics = {"holdout_" + k: v for k, v in binary_metrics(scores >= threshold, actual).items()}
    model.manifest = dataclasses.replace(model.manifest, threshold=threshold, metrics=metrics, data=data)
    return model


def _train_preference(args: argparse.Namespace):
    from dojo.replay.store import StoreReader
    from dojo.rewards.base import data_ids
    from dojo.rewards.preference import PreferenceConfig, ask_labeller, read_rows, train_preference

    _need(args, "data")
    readers = [StoreReader(p) for p in args.data]
    inputs = args.inputs or args.cameras
    if args.labeller == "sim":
        from dojo.sim.labeller import SimLabeller

        tasks = sorted({e.task for r in readers for e in r.episodes})
        if len(tasks) != 1:
            raise ValueError(f"--labeller sim needs stores of one twin task, got tasks {tasks}")
        labeller = SimLabeller(tasks[0], error_rate=args.error_rate, seed=args.seed)
    else:
        from dojo.rewards.vlm import VLMLabeller

        labeller = VLMLabeller(args.labeller, cameras=args.cameras)
    overrides = {k: v for k, v in (("steps", args.steps), ("queries", args.queries)) if v is not None}
    config = PreferenceConfig(inputs=inputs, seed=args.seed, **overrides)
    keys = tuple(dict.fromkeys((*inputs, *labeller.inputs)))
    obs, instructions = read_rows(readers, keys)
    first, second, answer = ask_labeller(labeller, obs, config.queries, instructions[0] if instructions else "",
                                         seed=args.seed)
    return train_preference({k: obs[k] for k in inputs}, first, second, answer, config, instructions=instructions,
                            data=data_ids(readers))


def _eval(args: argparse.Namespace) -> int:
    from dojo.rewards.base import load_reward_model
    from dojo.rewards.evaluate import confusion_table, evaluate
    from dojo.rewards.labels import LabelSet

    model = load_reward_model(args.model)
    result = evaluate(model, LabelSet.load(args.labels), worst_png=args.worst_png, progress=_tty())
    print(confusion_table(result))
    print(json.dumps({"model": args.model, "labels": args.labels, **result}))
    return 0
