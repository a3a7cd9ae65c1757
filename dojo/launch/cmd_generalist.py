"""`dojo generalist`: record the twin's mixed-quality multi-task dataset, and train dojo's own generalist on it."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generalist", help="dojo's language-conditioned generalist (V-GPS's base policy)",
                              description="Train dojo's flow-matching generalist by BC on a multi-task store, or "
                                          "record the twin's mixed-quality multi-task dataset to train it on.")
    sub = p.add_subparsers(dest="generalist_command", required=True, metavar="SUBCOMMAND")

    t = sub.add_parser("train", help="BC of the generalist on a store whose episodes carry instructions",
                       description="Train dojo's generalist (a flow-matching action-chunk head conditioned on the "
                                   "state, optional cameras and the instruction's embedding) on STORE; write FILE "
                                   "(msgpack) and print one JSON line.")
    t.add_argument("--store", required=True, metavar="STORE", help="a replay store whose episodes have instructions")
    t.add_argument("--encoder", required=True, metavar="FOLDER",
                   help="a local language-encoder folder (sentence-embedding or CLIP text model)")
    t.add_argument("--out", required=True, metavar="FILE", help="the generalist file to write")
    t.add_argument("--steps", type=int, default=20_000, help="gradient steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--chunk-len", type=int, default=4, help="actions per chunk (H)")
    t.add_argument("--cameras", default="", help="comma-separated camera keys to encode with the conv encoder "
                                                 "(default: state only)")
    t.add_argument("--successes-only", action="store_true", help="train on the successful episodes only")
    t.set_defaults(func=train)

    d = sub.add_parser("dataset", help="record the twin's mixed-quality multi-task store",
                       description="Record every instruction of the twin's language scene with scripted operators "
                                   "of mixed quality (dojo.sim.multitask.QUALITIES), failures kept; print one JSON "
                                   "line with the success share per instruction.")
    d.add_argument("--out", required=True, metavar="STORE", help="store path (created, or appended to)")
    d.add_argument("--episodes", type=int, default=100, help="episodes per instruction (100: what V-GPS was measured on)")
    d.add_argument("--mix", default="expert=1,sloppy=1,poor=1",
                   help="operator qualities and their shares, e.g. expert=0.5,poor=0.5")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--obs-mode", choices=("state", "pixels", "both"), default="state")
    d.add_argument("--image-size", type=int, default=64, help="camera image side in pixels")
    d.add_argument("--max-episode-steps", type=int, default=100)
    d.set_defaults(func=dataset)


def _progress_bar(total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty())


def train(args: argparse.Namespace) -> int:
    from dojo.policies.generalist import GeneralistConfig, save_generalist, train_generalist
    from dojo.policies.language import load_language_encoder

    if args.steps < 1:
        raise ValueError(f"--steps must be a positive number, got {args.steps}")
    cameras = tuple(c for c in args.cameras.split(",") if c)
    config = GeneralistConfig(chunk_len=args.chunk_len, camera_keys=cameras)
    encoder = load_language_encoder(args.encoder)
    bar = _progress_bar(args.steps, "train generalist", "step")

    def progress(step: int, info: dict) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{info['loss']:.4f}")

    try:
        model = train_generalist(args.store, encoder, config, steps=args.steps, seed=args.seed,
                                 successes_only=args.successes_only, on_progress=progress)
    finally:
        bar.close()
    save_generalist(args.out, model)
    print(json.dumps({"generalist": args.out, "encoder": model.encoder_id, "instructions": list(model.instructions),
                      **model.train_info}))
    return 0


def _parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in filter(None, text.split(",")):
        name, _, share = part.partition("=")
        try:
            mix[name.strip()] = float(share)
        except ValueError:
            raise ValueError(f"--mix must be QUALITY=SHARE[,...] (e.g. expert=1,poor=1), got {text!r}") from None
    return mix


def dataset(args: argparse.Namespace) -> int:
    from dojo.sim.multitask import SCENE_TASKS, record_multitask_dataset

    if args.episodes < 1:
        raise ValueError(f"--episodes must be a positive number, got {args.episodes}")
    mix = _parse_mix(args.mix)
    bar = _progress_bar(args.episodes * len(SCENE_TASKS), "record scene", "ep")
    try:
        result = record_multitask_dataset(args.out, args.episodes, mix, seed=args.seed,
                                          max_episode_steps=args.max_episode_steps, obs_mode=args.obs_mode,
                                          image_size=(args.image_size, args.image_size),
                                          progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    print(json.dumps(result))
    return 0
