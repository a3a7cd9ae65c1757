"""`dojo learner`, `dojo actor` and `dojo train`: the actor/learner system, as two processes or one command."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from dojo import runs
from dojo.launch.config import OPEN_SECTIONS, ConfigError, actor_ids, check_train_config, load_config


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("learner", help="run the learner process of an actor/learner run")
    p.add_argument("--run", required=True, help="run folder (created, or resumed if it holds a run)")
    p.add_argument("--robot", metavar="FILE", help="the station its actors run (a robot config file, e.g. twin): "
                                                   "env.kind=robot; its devices are not opened here")
    p.add_argument("--actors", action="store_true", help="also run the run's actors (actors.count of them, as "
                                                         "actors.backend says: local processes or a Ray fleet)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (launch/configs/train.yaml)")
    p.set_defaults(func=run_learner)

    p = subparsers.add_parser("actor", help="run an actor that streams to a learner")
    p.add_argument("--learner", metavar="HOST:PORT", help="the learner's address (default: RUN/link.json's)")
    p.add_argument("--run", default=None, help="the learner's run folder, when on the same machine (config, keys)")
    p.add_argument("--keys", default=None, help="folder with this actor's key pair and learner.key "
                                                "(default RUN/keys)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many env steps")
    p.add_argument("--robot", metavar="FILE", help="the station to act on (a robot config file, e.g. twin, or "
                                                   "launch/configs/robots/franka_fr3.yaml copied and filled in)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=run_actor)

    p = subparsers.add_parser("train", help="record demos, then learn on the twin with a learner and an actor process",
                              description="One command for a practice run on the twin: records demos with the "
                                          "scripted expert unless demos.store is given, starts a learner and an "
                                          "actor as two processes over loopback, shows progress, evaluates the "
                                          "final policy and writes RUN/ (store, checkpoints, TensorBoard logs, "
                                          "learning_curve.png). Given the folder of a run that was stopped or "
                                          "crashed, it resumes it. Ends with one JSON line.")
    p.add_argument("--sim", required=True, metavar="TASK", help="reach, pick_cube or peg_insert")
    p.add_argument("--run", default=None, help="run folder (default runs/TASK-TIME)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=run_train)


def train_config(overrides, run: Path | None = None, robot: str | None = None):
    """The run's config: RUN/config.yaml when the run exists, else train.yaml; then the station file `robot`
    (env.kind=robot) and the overrides. Every key and value is checked here, before anything starts."""
    from dojo.robot.station import load_station

    saved = run / runs.CONFIG if run is not None else None
    replace = {}
    if robot:
        try:
            replace = {"env.kind": "robot", "robot": load_station(robot)[1]}
        except ValueError as err:
            raise ConfigError(str(err)) from None
    name = str(saved) if saved and saved.exists() else "train"
    cfg = load_config(name, overrides, open_sections=OPEN_SECTIONS, replace=replace)
    if not cfg.learner.actors:  # one id per actor of actors.count
        cfg = load_config(name, overrides, open_sections=OPEN_SECTIONS,
                          replace={**replace, "learner.actors": actor_ids(cfg.actors.count)})
    check_train_config(cfg)
    return cfg


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("jax", "absl", "OpenGL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress_display(total: int, desc: str, unit: str, log_lines: bool = False):
    """(callback for progress records, close): a bar for a person at a terminal; otherwise nothing, or with
    `log_lines` one JSON line per record (a learner's log)."""
    if not sys.stderr.isatty():
        show = (lambda record: print(json.dumps(record), file=sys.stderr, flush=True)) if log_lines else None
        return show, (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=1.0)

    def show(record: dict) -> None:
        bar.n = min(record["env_steps"] if unit == "step" else record["updates"], bar.total)
        shown = {"updates": record["updates"], "success": record.get("success_rate")}
        if record.get("eval_success_rate") is not None:
            shown["eval"] = record["eval_success_rate"]
        bar.set_postfix(shown)
        bar.refresh()
    return show, bar.close


# --- learner --------------------------------------------------------------------------------------------
def run_learner(args: argparse.Namespace) -> int:
    from dojo.launch.build import check_learner_inputs, eval_config, make_env, reward_service, run_spaces
    from dojo.learners.learner import Learner
    from dojo.link import create_keys

    run = Path(args.run)
    cfg = train_config(args.overrides, run, robot=args.robot)
    obs_space, action_space = run_spaces(cfg)
    check_learner_inputs(cfg, obs_space, action_space)
    lock = runs.RunLock(run)  # a second learner on a live run stops here, before it touches anything
    OmegaConf.save(cfg, run / runs.CONFIG)
    create_keys(run, actors=list(cfg.learner.actors), exist_ok=True)
    setup_logging()
    learner = Learner(run, cfg, obs_space, action_space, serve=True, reward_service=reward_service(cfg),
                      eval_env=make_env(eval_config(cfg)) if cfg.learner.eval_every else None)
    fleet = []

    def start_fleet() -> None:  # --actors: this learner runs its own fleet once it listens
        from dojo.link.fleet import start_actors

        link, ids = runs.read_link_info(run), list(cfg.learner.actors)[:cfg.actors.count]
        fleet.extend(start_actors(run, [actor_command(run, link, a) for a in ids], ids, cfg.actors.backend,
                                  dict(cfg.actors.resources)))

    def stop(signum, frame):  # finish the current update, checkpoint and exit cleanly
        learner.stop_event.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    show, close = progress_display(int(cfg.learner.env_steps), "learner", "step", log_lines=True)
    try:
        result = learner.run_until_done(progress=show, on_listening=start_fleet if args.actors else None)
    finally:
        close()
        for actor in fleet:
            actor.stop()
        lock.release()
    print(json.dumps(result), flush=True)
    return 0


# --- actor ----------------------------------------------------------------------------------------------
def run_actor(args: argparse.Namespace) -> int:
    from dojo.launch.build import actor_config, journal_path, make_env, make_operator, resume_practice, serve_reward
    from dojo.link import LinkClient, row_schema
    from dojo.robot.actor import Actor

    run = Path(args.run) if args.run else None
    cfg = train_config(args.overrides, run, robot=args.robot)
    keys = Path(args.keys) if args.keys else (run / runs.KEYS if run else None)
    if keys is None:
        raise ConfigError("give --keys DIR (this actor's key pair and learner.key) or --run RUN")
    if not (keys / "learner.key").is_file():
        raise FileNotFoundError(f"{keys / 'learner.key'} not found: copy the learner's RUN/keys/learner.key and "
                                f"this actor's {cfg.actor.id}.key_secret into {keys}")
    address = args.learner
    if address is None:
        info = runs.read_link_info(run) if run else {}
        if not info:
            raise ConfigError("no learner address: give --learner HOST:PORT, or --run RUN of a learner running on "
                              "this machine (RUN/link.json appears once it listens)")
        address = f"{info['host']}:{info['port']}"
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    setup_logging()
    env = make_env(cfg)
    env.unwrapped.teleop = make_operator(cfg, env)
    schema = row_schema({k: (s.shape, s.dtype) for k, s in env.observation_space.spaces.items()},
                        env.action_space.shape[0])
    journal = open_journal(journal_path(cfg, keys))
    resume_practice(env, journal.path)  # a practice session goes on from the attempts journaled so far
    client = LinkClient(journal, address, keys, actor=cfg.actor.id, schema=schema)
    serve_reward(env, client)
    actor = Actor(env, journal, actor_config(cfg), client=client)
    signal.signal(signal.SIGTERM, lambda *_: actor.stop_event.set())
    try:
        result = actor.run(max_steps=args.steps)
    except KeyboardInterrupt:
        result = {**actor.summary(), "interrupted": True}
    finally:
        # Also after an error (a device that stopped): the learner gets what was journaled. Refused, or
        # given up on an unreachable learner: what is unacknowledged waits in the journal for the next run.
        actor.close(0.0 if actor.gave_up else 30.0)
        env.close()
    print(json.dumps(result), flush=True)
    return 0


def open_journal(path: Path, wait_s: float = 60.0):
    """The actor's journal; a restarted actor waits for its predecessor (still draining) to let go of it."""
    from dojo.link import StoreJournal
    from dojo.replay.store import StoreError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return StoreJournal(path)
        except StoreError as err:
            if "already open by another writer" not in str(err) or time.monotonic() > deadline:
                raise
            logging.getLogger("dojo.actor").warning("waiting for journal %s: another process of this actor still "
                                                    "holds it", path)
            time.sleep(1.0)


# --- train ----------------------------------------------------------------------------------------------
def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_train(args: argparse.Namespace) -> int:
    from dojo.learners.report import plot_learning_curve

    cfg, run, started = train_on_twin(args.sim, args.sim, args.run, args.overrides)
    last = (runs.read_progress(run) or [{}])[-1]
    eval_success = evaluate_snapshot(cfg, run, cfg.eval.episodes) if cfg.eval.episodes else None
    plot_learning_curve(run, eval_success)
    print(json.dumps({"task": cfg.task, "run": str(run), "env_steps": last.get("env_steps"),
                      "updates": last.get("updates"), "train_success_rate": last.get("success_rate"),
                      "success_rate": eval_success, "eval_episodes": cfg.eval.episodes,
                      "wall_s": round(time.monotonic() - started, 1)}))
    return 0


def train_on_twin(name: str, task: str | None, run_arg: str | None, overrides: list[str], restarts: int = 0,
                  command: str = "train", robot: str | None = None):
    """`dojo train` / `dojo practice` up to the end of learning: the run folder (new, or resumed), the demos
    (recorded with the twin's scripted expert unless demos.store is given), then a learner and its actors as
    processes over loopback until the budget is spent (`restarts`: a killed one is started again). `name` is what
    --sim said (a task, or a practice pair), `task` the twin task it runs; or `robot`, a station file whose task
    runs (its demos are given). Returns (config, run, start time)."""
    from dojo.launch.build import check_learner_inputs, run_spaces
    from dojo.link.fleet import run_fleet

    run = Path(run_arg or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (run / runs.CONFIG).exists():
        saved = OmegaConf.load(run / runs.CONFIG)
        saved_command = "practice" if OmegaConf.select(saved, "practice.enabled") else "train"
        where = f"--robot {robot}" if robot else f"--sim {name}"
        if (saved.get("task"), saved_command) != (task or saved.get("task"), command):
            raise ConfigError(f"run {run} is a `dojo {saved_command}` run of {saved.get('task')!r}; `dojo {command} "
                              f"{where}` does not fit it (resume it with the command and --sim or --robot it was "
                              f"started with, or choose another --run)")
    overrides = ([f"task={task}"] if task else []) + list(overrides)
    if not any(o.startswith("link.port=") for o in overrides):  # a resumed run's old port may be taken now
        overrides.append(f"link.port={free_port('127.0.0.1')}")
    cfg = train_config(overrides, run, robot=robot)
    if robot and not cfg.demos.store and cfg.demos.episodes > 0:
        raise ConfigError(f"--robot has no scripted expert to record demos.episodes={cfg.demos.episodes} demos: give "
                          "demos.store=STORE (teleop demos, e.g. dojo record --robot FILE --teleop spacemouse) or "
                          "demos.episodes=0")
    if not cfg.demos.store and cfg.demos.episodes == 0 and cfg.learner.offline_updates > 0:
        raise ConfigError(f"learner.offline_updates={cfg.learner.offline_updates} trains on demos, but "
                          "demos.episodes=0 and no demos.store: give demos, or learner.offline_updates=0")
    obs_space, action_space = run_spaces(cfg)
    check_learner_inputs(cfg, obs_space, action_space)
    lock = runs.RunLock(run)  # a second train or learner on a live run stops here, before it touches anything
    started = time.monotonic()
    try:
        if not cfg.demos.store and cfg.demos.episodes > 0:
            demos = run / "demos.zarr"
            _record_demos(cfg, demos)
            cfg = train_config(overrides + [f"demos.store={demos}"], run)
        OmegaConf.save(cfg, run / runs.CONFIG)
        show, close = progress_display(int(cfg.learner.env_steps), f"{command} {name}", "step")
        try:
            run_fleet(run, ["learner", "--run", str(run)], lambda link, actor: actor_command(run, link, actor),
                      list(cfg.learner.actors)[:cfg.actors.count], lock, backend=cfg.actors.backend,
                      resources=dict(cfg.actors.resources), on_progress=show, restarts=restarts)
        finally:
            close()
    finally:
        lock.release()
    return cfg, run, started


def actor_command(run: Path, link: dict, actor: str) -> list[str]:
    """`dojo actor` for one actor of a run on this machine (or on a Ray node that shares the run folder):
    its own journal in RUN/journal."""
    return ["actor", "--learner", f"{link['host']}:{link['port']}", "--run", str(run.resolve()), f"actor.id={actor}",
            f"actor.journal={(run / 'journal' / f'{actor}.zarr').resolve()}"]


def _record_demos(cfg, path: Path) -> None:
    from dojo.launch.build import make_env
    from dojo.launch.cmd_record import record
    from dojo.replay.store import EpisodeWriter, open_store
    from dojo.sim.experts import make_expert

    have = open_store(path).num_episodes if (path / "zarr.json").exists() else 0
    if have >= cfg.demos.episodes:
        return
    env = make_env(cfg, local_reward=True)
    session = env.env  # the env inside CanonicalEnv: the RobotEnv, or a practice session's
    if hasattr(session, "fresh_scenes"):
        # Each demo of a practice session starts from a scene set up anew, as a person sets it up between
        # demonstrations. A chain of the expert's exact placements would start every demo at the pad's centre, and
        # a policy cloned from those never learns to bring an off-centre cube back to it: its placements drift.
        session.fresh_scenes = True
    try:
        with EpisodeWriter(path) as writer:
            record(session, writer, cfg.demos.episodes - have, act=make_expert(env.unwrapped),
                   seed=10_000 + have, operator="scripted-expert")
    finally:
        env.close()


def evaluate_snapshot(cfg, run: Path, episodes: int, seed: int = 1_000_000) -> float | None:
    """Success rate of the run's snapshot, acting deterministically, over seeded episodes of its env (in the twin
    by its ground truth, also when the run practised with a reward model)."""
    from dojo.launch.build import eval_config, make_env
    from dojo.policies.evaluation import evaluate_run

    env = make_env(eval_config(cfg))
    try:
        return evaluate_run(run, env, episodes, seed=seed)["success_rate"]
    finally:
        env.close()
