"""`dojo steer`: a generalist (dojo's own file, or an openpi server's URL) steered by a critic (V-GPS), run
through the actor on the twin or a station, its settings written to the run so `dojo eval --run RUN` evaluates
the same steered policy. Ends with one JSON line.

    RUN/steer.json        the settings: generalist, critic, K, beta, execution, both sides' action statistics
    RUN/config.yaml       the env (as `dojo train` writes it), for `dojo eval --run RUN`
    RUN/replay/steer.zarr every step the actor took
    RUN/steering.jsonl    per steering step: chosen index, Q spread, q of the choice, sample and score ms
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dojo import runs
from dojo.fileio import atomic_write
from dojo.launch.config import ConfigError

STEER = "steer.json"
STEER_LOG = "steering.jsonl"
STEER_STORE = "replay/steer.zarr"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "steer", help="steer a generalist with a critic (V-GPS) through the actor",
        description="Each control step the generalist proposes K action chunks, the critic scores their first "
                    "actions (Q = min over its heads) and the best (beta 0) or a softmax(Q/beta) draw runs.")
    p.add_argument("--generalist", required=True, metavar="FILE|URL",
                   help="dojo's generalist file, or an openpi policy server (ws://HOST:PORT)")
    p.add_argument("--critic", required=True, metavar="RUN|FILE",
                   help="a run folder (its policy.msgpack) or snapshot with a critic: dojo learn --offline --agent "
                        "calql-vgps learner.language_encoder=FOLDER learner.relabel=vgps")
    p.add_argument("--language-encoder", metavar="FOLDER",
                   help="the critic's language encoder (default: the one its run was trained with)")
    p.add_argument("--k", type=int, default=10, help="candidate chunks per step (the paper: 10-50)")
    p.add_argument("--beta", type=float, default=0.0, help="0: the argmax; > 0: sample softmax(Q / beta)")
    p.add_argument("--execution", choices=("ensemble", "open_loop"), default="ensemble",
                   help="temporal ensembling over overlapping chunks, or a chunk run open loop")
    p.add_argument("--ensemble-temp", type=float, default=0.0, help="ensembling weight exp(-temp * i), i=0 oldest")
    p.add_argument("--sticky-steps", type=int, default=0,
                   help="binarise the gripper; it changes after this many disagreeing steps (0: off)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", metavar="TASK", help="the twin's task (e.g. scene_pick_red)")
    where.add_argument("--robot", metavar="FILE", help="a station (robot config file): its devices")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (settings, store, per-step log)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="train.yaml keys (env.obs_mode=both, ...)")
    p.set_defaults(func=_steer)


# --- the settings, checked -------------------------------------------------------------------------------

def steer_settings(args) -> dict:
    """What steer.json holds, each value checked (one line naming a bad one)."""
    if args.k < 1:
        raise ConfigError(f"--k must be an integer >= 1 (candidates per step), got {args.k}")
    if not (np.isfinite(args.beta) and args.beta >= 0):
        raise ConfigError(f"--beta must be a number >= 0 (0: argmax), got {args.beta}")
    if args.sticky_steps < 0:
        raise ConfigError(f"--sticky-steps must be >= 0, got {args.sticky_steps}")
    if not (np.isfinite(args.ensemble_temp) and args.ensemble_temp >= 0):
        raise ConfigError(f"--ensemble-temp must be a number >= 0, got {args.ensemble_temp}")
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    generalist = args.generalist
    if not _is_url(generalist):
        if not Path(generalist).is_file():
            raise FileNotFoundError(f"--generalist {generalist!r} is neither a generalist file nor a ws:// URL")
        generalist = str(Path(generalist).resolve())
    critic = critic_snapshot_path(args.critic)
    encoder = args.language_encoder or _trained_encoder(args.critic)
    return {"generalist": generalist, "critic": critic, "language_encoder": str(Path(encoder).resolve()) if encoder
            else "", "k": int(args.k), "beta": float(args.beta),
            "execution": {"mode": args.execution, "ensemble_temp": float(args.ensemble_temp),
                          "sticky_steps": int(args.sticky_steps)},
            "seed": int(args.seed)}


def _is_url(source: str) -> bool:
    return source.startswith(("ws://", "wss://"))


def critic_snapshot_path(source: str) -> str:
    path = Path(source)
    if path.is_dir():
        path = path / runs.SNAPSHOT
    if not path.is_file():
        raise FileNotFoundError(f"--critic {source!r}: no snapshot there (give a run folder holding "
                                f"{runs.SNAPSHOT}, or the file)")
    return str(path.resolve())


def _trained_encoder(critic: str) -> str:
    """The language encoder folder the critic's run was trained with (its config.yaml), or ""."""
    config = Path(critic) / runs.CONFIG
    if not config.is_file():
        return ""
    from omegaconf import OmegaConf

    return str(OmegaConf.load(config).learner.get("language_encoder", "") or "")


# --- building the steered policy (dojo steer and dojo eval) ------------------------------------------------

def open_generalist(source: str, seed: int = 0):
    from dojo.policies.generalist import OpenpiGeneralist, load_generalist

    return OpenpiGeneralist(source) if _is_url(source) else load_generalist(source, seed=seed)


def build_steered(settings: dict, action_dim: int | None = None):
    """(SteeredPolicy, generalist) from steer.json's settings; `action_dim`: the env's, checked against both."""
    from dojo.policies.language import load_language_encoder
    from dojo.policies.snapshot import load_snapshot
    from dojo.policies.steering import ChunkExecution, Critic, SteeredPolicy

    snap = load_snapshot(settings["critic"])
    encoder = None
    if snap.language:
        if not settings["language_encoder"]:
            raise ValueError(f"the critic reads instructions through language encoder {snap.language['id']!r}; "
                             f"give its folder with --language-encoder")
        encoder = load_language_encoder(settings["language_encoder"])
    critic = Critic(snap, encoder)
    generalist = open_generalist(settings["generalist"], settings["seed"])
    try:
        dims = {"generalist": generalist.action_dim, "critic": critic.action_dim, "env": action_dim}
        known = {k: v for k, v in dims.items() if v is not None}
        if len(set(known.values())) > 1:
            raise ValueError(f"action dimensions do not fit: {known}")
        ex = settings["execution"]
        execution = ChunkExecution(ex["mode"], generalist.chunk_len, ex["ensemble_temp"], ex["sticky_steps"])
        policy = SteeredPolicy(generalist, critic, settings["k"], settings["beta"], execution, seed=settings["seed"])
    except BaseException:
        generalist.close()
        raise
    return policy, generalist


def _sides(policy) -> dict:
    """Both sides' action statistics, as steering used them (written to steer.json)."""
    critic = policy.scorer
    return {"policy_action_stats": {k: np.asarray(v).tolist() for k, v in policy.stats.items()},
            "critic_action_bounds": {"low": critic.action_low.tolist(), "high": critic.action_high.tolist()},
            "critic_language": critic.language, "chunk_len": policy.execution.chunk_len}


def _steer(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from dojo.launch.build import actor_config, eval_config, make_env
    from dojo.launch.cmd_learn import _env_overrides
    from dojo.launch.cmd_train import train_config
    from dojo.policies.steering import SteeringEnv, summarize_log
    from dojo.replay.store import EpisodeWriter
    from dojo.robot.actor import Actor

    args.env, args.env_arg, args.success_key = None, [], None  # the shorthands dojo eval's _env_overrides reads
    settings = steer_settings(args)
    run = Path(args.out)
    cfg = eval_config(train_config(_env_overrides(args) + [f"seed={args.seed}"] + list(args.overrides),
                                   robot=args.robot))
    lock = runs.RunLock(run)
    env = generalist = policy = None
    try:
        env = make_env(cfg)
        policy, generalist = build_steered(settings, int(env.action_space.shape[0]))
        OmegaConf.save(cfg, run / runs.CONFIG)
        atomic_write(str(run / STEER), (json.dumps({**settings, **_sides(policy)}, indent=1) + "\n").encode())
        steered = SteeringEnv(env, policy)
        with EpisodeWriter(run / STEER_STORE, obs_spec={k: (s.shape, s.dtype) for k, s in
                                                         env.observation_space.spaces.items()},
                           action_dim=int(env.action_space.shape[0])) as journal:
            actor = Actor(steered, journal, actor_config(cfg), policy=policy)
            while actor.episodes < args.episodes and not actor.done:
                actor.step()
    finally:
        if policy is not None:  # the steps steered so far, also when a dropped server ends the run
            with open(run / STEER_LOG, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in policy.log)
        if generalist is not None:
            generalist.close()
        if env is not None:
            env.close()
        lock.release()
    print(json.dumps({"run": str(run), "episodes": actor.episodes,
                      "success_rate": round(actor.successes / max(actor.episodes, 1), 4), "k": settings["k"],
                      "beta": settings["beta"], **summarize_log(policy.log)}))
    return 0


def evaluate_steered(run: Path, env, episodes: int, seed: int = 0) -> dict:
    """`dojo eval` of a steered run: its steer.json's policy on `env` (evaluation.evaluate), plus the
    steering summary."""
    from dojo.policies.evaluation import evaluate
    from dojo.policies.steering import SteeringEnv, summarize_log

    with open(run / STEER) as f:
        settings = json.load(f)
    policy, generalist = build_steered(settings, int(env.action_space.shape[0]))
    try:
        result = evaluate(SteeringEnv(env, policy), policy.act_normalized, episodes, seed=seed)
    finally:
        generalist.close()
    return {**result, **summarize_log(policy.log)}
