"""`dojo learner`, `dojo actor` and `dojo train`: the actor/learner system, as two processes or one command."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from dojo.launch.config import ConfigError, load_config

RUN_CONFIG = "config.yaml"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("learner", help="run the learner process of an actor/learner run")
    p.add_argument("--run", required=True, help="run folder (created, or resumed if it holds a run)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (launch/configs/train.yaml)")
    p.set_defaults(func=run_learner)

    p = subparsers.add_parser("actor", help="run an actor that streams to a learner")
    p.add_argument("--learner", required=True, metavar="HOST:PORT")
    p.add_argument("--run", default=None, help="the learner's run folder, when on the same machine (config, keys)")
    p.add_argument("--keys", default=None, help="folder with this actor's key pair and learner.key "
                                                "(default RUN/keys)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many env steps")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=run_actor)

    p = subparsers.add_parser("train", help="record demos, then learn on the twin with a learner and an actor process",
                              description="One command for a practice run on the twin: records demos with the "
                                          "scripted expert unless demos.store is given, starts a learner and an "
                                          "actor as two processes over loopback, shows progress, evaluates the "
                                          "final policy and writes RUN/ (store, checkpoints, TensorBoard logs, "
                                          "learning_curve.png). Ends with one JSON line.")
    p.add_argument("--sim", required=True, metavar="TASK", help="reach, pick_cube or peg_insert")
    p.add_argument("--run", default=None, help="run folder (default runs/TASK-TIME)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=run_train)


# --- configuration ----------------------------------------------------------------------------------------
AGENT_SECTIONS = [f"agent.{name}" for name in ("sac", "calql", "iql", "fql", "bc")]


def train_config(overrides, run: Path | None = None):
    """The run's config: RUN/config.yaml when resuming, else train.yaml; then the overrides. Every key and
    value is checked here, before any process starts."""
    saved = run / RUN_CONFIG if run is not None else None
    cfg = load_config(str(saved) if saved and saved.exists() else "train", overrides, open_sections=AGENT_SECTIONS)
    from dojo.learners.learner import agent_config  # checks agent.<name> options against the agent
    from dojo.rewards.interventions import INTERVENTION_MODES

    agent_config(cfg)
    if cfg.intervention.mode not in INTERVENTION_MODES:
        raise ConfigError(f"intervention.mode must be one of {INTERVENTION_MODES}, got {cfg.intervention.mode!r}")
    operators = ("none", "sim", "spacemouse", "gamepad", "keyboard")
    if cfg.intervention.operator not in operators:
        raise ConfigError(f"intervention.operator must be one of {operators}, got {cfg.intervention.operator!r}")
    if cfg.env.obs_mode not in ("state", "pixels", "both"):
        raise ConfigError(f"env.obs_mode must be state, pixels or both, got {cfg.env.obs_mode!r}")
    for key in ("learner.env_steps", "env.max_episode_steps", "env.image_size", "demos.episodes", "eval.episodes"):
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {OmegaConf.select(cfg, key)}")
    return cfg


def make_sim_env(cfg):
    from dojo.sim import make_env

    size = int(cfg.env.image_size)
    return make_env(cfg.task, obs_mode=cfg.env.obs_mode, image_size=(size, size), control_hz=cfg.env.control_hz,
                    action_dim=cfg.env.action_dim, max_episode_steps=cfg.env.max_episode_steps,
                    randomize=cfg.env.randomize)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("jax", "absl", "OpenGL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- learner --------------------------------------------------------------------------------------------
def run_learner(args: argparse.Namespace) -> int:
    from dojo.learners.learner import Learner, install_stop_handlers, spaces_from_store
    from dojo.replay.link import create_keys

    run = Path(args.run)
    cfg = train_config(args.overrides, run)
    run.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run / RUN_CONFIG)
    if not (run / "keys").exists():
        create_keys(run, actors=list(cfg.learner.actors))
    if cfg.demos.store:
        obs_space, action_space = spaces_from_store(cfg.demos.store)
    else:
        env = make_sim_env(cfg)
        obs_space, action_space = env.observation_space, env.action_space
        env.close()
    _setup_logging()
    from dojo.rewards.interventions import episode_rlif_reward

    mode = cfg.intervention.mode
    learner = Learner(run, cfg, obs_space, action_space,
                      reward_fn=episode_rlif_reward if mode in ("rlif", "both") else None,
                      copy_interventions=mode in ("hil-serl", "both"))
    install_stop_handlers(learner)
    if sys.stderr.isatty():  # a person watching: a progress bar; otherwise (a log file) one JSON line per interval
        from tqdm import tqdm

        bar = tqdm(total=int(cfg.learner.env_steps), desc="learner", unit="step", file=sys.stderr)

        def progress(record: dict) -> None:
            bar.n = min(record["env_steps"], bar.total)
            bar.set_postfix(updates=record["updates"], episodes=record["episodes"], success=record["success_rate"])
    else:
        bar, progress = None, lambda record: print(json.dumps(record), file=sys.stderr, flush=True)
    try:
        result = learner.run_until_done(progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(result), flush=True)
    return 0


# --- actor ----------------------------------------------------------------------------------------------
def journal_path(cfg, keys: Path) -> Path:
    """One journal per actor and learner run: the learner's public key names the run it streams to."""
    if cfg.actor.journal:
        return Path(cfg.actor.journal)
    learner_key = hashlib.sha256((keys / "learner.key").read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("DOJO_JOURNAL_DIR", "journal")) / f"{cfg.actor.id}-{learner_key}.zarr"


def run_actor(args: argparse.Namespace) -> int:
    from dojo.robot.actor import Actor, ActorConfig

    run = Path(args.run) if args.run else None
    cfg = train_config(args.overrides, run)
    keys = Path(args.keys) if args.keys else (run / "keys" if run else None)
    if keys is None:
        raise ValueError("give --keys DIR (this actor's key pair and learner.key) or --run RUN")
    if not (keys / "learner.key").is_file():
        raise FileNotFoundError(f"{keys / 'learner.key'} not found: copy the learner's RUN/keys/learner.key and "
                                f"this actor's {cfg.actor.id}.key_secret into {keys}")
    _setup_logging()
    env = make_sim_env(cfg)
    env.teleop = make_operator_from_config(cfg, env)
    actor = Actor(env, journal_path(cfg, keys), args.learner, keys, ActorConfig(
        actor_id=cfg.actor.id, random_steps=cfg.actor.random_steps, max_lead_steps=cfg.actor.max_lead_steps,
        updates_per_step=cfg.learner.updates_per_step, realtime=cfg.env.realtime, seed=cfg.seed))
    signal.signal(signal.SIGTERM, lambda *_: actor.stop_event.set())
    try:
        result = actor.run(max_steps=args.steps)
    except KeyboardInterrupt:
        result = {"steps": actor.steps, "episodes": actor.episodes, "interrupted": True}
    env.close()
    print(json.dumps(result), flush=True)
    return 0


def make_operator_from_config(cfg, env):
    """The person (or the twin's simulated operator) who may take over from the policy, or None."""
    kind = cfg.intervention.operator
    if kind == "none":
        return None
    from dojo.robot.teleop import make_teleop

    if kind == "sim":
        return make_teleop("sim-operator", env=env, mode="intervening", rule=cfg.intervention.rule,
                           skill=cfg.intervention.skill, noise_std=cfg.intervention.noise_std,
                           takeover_steps=cfg.intervention.takeover_steps,
                           aim_offset_m=tuple(cfg.intervention.aim_offset_m), seed=cfg.seed)
    return make_teleop(kind)


# --- train ----------------------------------------------------------------------------------------------
def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    run = Path(args.run or f"runs/{args.sim}-{time.strftime('%Y%m%d-%H%M%S')}")
    overrides = [f"task={args.sim}"] + list(args.overrides)
    if not any(o.startswith("link.port=") for o in overrides):
        overrides.append(f"link.port={free_port('127.0.0.1')}")
    if not any(o.startswith("actor.journal=") for o in overrides):
        overrides.append(f"actor.journal={run / 'journal' / 'actor-0.zarr'}")
    cfg = train_config(overrides, run)
    run.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not cfg.demos.store and cfg.demos.episodes > 0:
        demos = run / "demos.zarr"
        _record_demos(cfg, demos)
        cfg = train_config(overrides + [f"demos.store={demos}"], run)
    OmegaConf.save(cfg, run / RUN_CONFIG)

    cli = [sys.executable, "-m", "dojo.launch.cli"]
    logs = {name: open(run / f"{name}.log", "ab") for name in ("learner", "actor")}
    learner = subprocess.Popen(cli + ["learner", "--run", str(run)], stdout=logs["learner"], stderr=subprocess.STDOUT)
    actor = None
    bar = tqdm(total=int(cfg.learner.env_steps), desc=f"train {cfg.task}", unit="step", file=sys.stderr,
               disable=not sys.stderr.isatty(), mininterval=1.0)
    last = {}
    try:
        _wait_for(lambda: (run / "keys" / "learner.key").exists() and (run / "policy.msgpack").exists(), learner, run,
                  120)
        actor = subprocess.Popen(cli + ["actor", "--learner", f"{cfg.link.host}:{cfg.link.port}", "--run", str(run)],
                                 stdout=logs["actor"], stderr=subprocess.STDOUT)
        while learner.poll() is None:
            if actor.poll() not in (None, 0):
                raise _exited("actor", actor.returncode, run)
            last = _last_progress(run) or last
            if last:
                bar.n = min(last["env_steps"], bar.total)
                bar.set_postfix(updates=last["updates"], success=last.get("success_rate"))
                bar.refresh()
            time.sleep(1.0)
        if learner.returncode != 0:
            raise _exited("learner", learner.returncode, run)
        actor.wait(timeout=60)
    finally:
        bar.close()
        for proc in (actor, learner):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for f in logs.values():
            f.close()
    last = _last_progress(run) or last
    eval_success = evaluate(cfg, run, cfg.eval.episodes) if cfg.eval.episodes else None
    plot_learning_curve(run, eval_success)
    print(json.dumps({"task": cfg.task, "run": str(run), "env_steps": last.get("env_steps"),
                      "updates": last.get("updates"), "train_success_rate": last.get("success_rate"),
                      "success_rate": eval_success, "eval_episodes": cfg.eval.episodes,
                      "wall_s": round(time.monotonic() - started, 1)}))
    return 0


def _record_demos(cfg, path: Path) -> None:
    from dojo.launch.cmd_record import record
    from dojo.replay.store import EpisodeWriter, open_store
    from dojo.sim.experts import make_expert

    have = open_store(path).num_episodes if (path / "zarr.json").exists() else 0
    if have >= cfg.demos.episodes:
        return
    env = make_sim_env(cfg)
    with EpisodeWriter(path) as writer:
        record(env, writer, cfg.demos.episodes - have, act=make_expert(env), seed=10_000 + have,
               operator="scripted-expert")
    env.close()


def _exited(name: str, code: int, run: Path) -> RuntimeError:
    """The error for a child process that died: its exit code and the last line of its log (the reason)."""
    log = run / f"{name}.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return RuntimeError(f"the {name} exited with code {code}: {lines[-1] if lines else '(empty log)'}; see {log}")


def _wait_for(cond, proc, run: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if proc.poll() is not None:
            raise _exited("learner", proc.returncode, run)
        if time.monotonic() > deadline:
            raise TimeoutError(f"the learner did not start within {timeout_s} s")
        time.sleep(0.2)


def _last_progress(run: Path) -> dict:
    path = run / "progress.jsonl"
    if not path.exists():
        return {}
    lines = path.read_text().strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def evaluate(cfg, run: Path, episodes: int, seed: int = 1_000_000) -> float:
    """Success rate of the run's snapshot, acting deterministically on the twin, over seeded episodes."""
    from dojo.learners.loop import evaluate_run

    env = make_sim_env(cfg)
    try:
        return evaluate_run(str(run), env, episodes, seed=seed)["success_rate"]
    finally:
        env.close()


def plot_learning_curve(run: Path, eval_success: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if r.get("success_rate") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, x, label in ((axes[0], "env_steps", "env steps"), (axes[1], "wall_s", "wall-clock s")):
        ax.plot([r[x] for r in records], [r["success_rate"] for r in records], label="practice episodes (last 20)")
        if eval_success is not None and records:
            ax.scatter([records[-1][x]], [eval_success], color="red", zorder=3, label="final evaluation")
        ax.set_xlabel(label)
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle(run.name)
    fig.tight_layout()
    fig.savefig(run / "learning_curve.png", dpi=100)
    plt.close(fig)
