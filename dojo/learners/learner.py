"""The learner process: actors' steps arrive over the link into durable per-actor stores; an agent trains on
them mixed with demonstrations, publishes policy snapshots, checkpoints, logs, and resumes after a restart.

Run folder layout:
    RUN/config.yaml            the resolved config
    RUN/keys/                  link key pairs (see dojo.replay.link.create_keys)
    RUN/replay/<actor>.zarr    every step each actor produced, exactly once
    RUN/checkpoints/learner.ckpt   full learner state (agent + counters), replaced atomically
    RUN/policy.msgpack         the newest inference snapshot
    RUN/progress.jsonl         one JSON line per log interval; RUN/tb/ TensorBoard events
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from pathlib import Path

import numpy as np

from dojo.learners.checkpoint import agent_module, load_checkpoint, save_checkpoint
from dojo.policies.snapshot import save_snapshot, snapshot_bytes
from dojo.replay.link import LinkServer
from dojo.replay.sampler import ReplayMirror, symmetric_ratio
from dojo.replay.store import StoreReader
from dojo.replay.stream import StoreSink

log = logging.getLogger("dojo.learner")

CHECKPOINT = "checkpoints/learner.ckpt"
SNAPSHOT = "policy.msgpack"  # the name `dojo eval --run` reads
PROGRESS = "progress.jsonl"


def agent_config(cfg):
    """The chosen agent's Config: its published defaults with the run's agent.<name> overrides."""
    module = agent_module(cfg.agent.name)
    overrides = dict(cfg.agent.get(cfg.agent.name) or {})
    fields = {f.name for f in dataclasses.fields(module.Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"agent {cfg.agent.name!r} has no option(s) {unknown}; it has {sorted(fields)}")
    overrides = {k: tuple(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig" else v
                 for k, v in overrides.items()}
    return module, module.get_config(**overrides)


class Learner:
    def __init__(self, run_dir: str | Path, cfg, obs_space, action_space, reward_fn=None,
                 copy_interventions: bool = False) -> None:
        """`reward_fn(episode) -> rewards` relabels the actors' episodes as they load (e.g. RLIF);
        `copy_interventions` also samples intervened steps as demonstrations (HIL-SERL)."""
        self.run, self.cfg = Path(run_dir), cfg
        self.module, self.agent_cfg = agent_config(cfg)
        (self.run / "replay").mkdir(parents=True, exist_ok=True)
        self.sinks = {actor: StoreSink(self.run / "replay" / f"{actor}.zarr") for actor in cfg.learner.actors}
        self.stop_event = threading.Event()
        self.updates, self.rng = 0, np.random.default_rng(cfg.seed)
        ckpt = self.run / CHECKPOINT
        if ckpt.exists():
            self.agent, extra = load_checkpoint(str(ckpt))
            self.updates = int(extra["updates"])
            self.rng.bit_generator.state = extra["sampler_rng"]
            log.info("resumed from %s at %d updates", ckpt, self.updates)
        else:
            self.agent = self.module.create(cfg.seed, obs_space, action_space, self.agent_cfg)
        self.mirror = ReplayMirror(capacity_steps=1_000_000)
        if cfg.demos.store:
            self.mirror.follow(cfg.demos.store, obs_keys=tuple(obs_space.spaces))
        for sink in self.sinks.values():
            self.mirror.follow(sink.path, obs_keys=tuple(obs_space.spaces), reward_fn=reward_fn,
                               copy_interventions=copy_interventions)
        self.server = LinkServer(self._on_steps, self.run / "keys", host=cfg.link.host, port=cfg.link.port,
                                 last_seq_by_actor={a: s.last_seq for a, s in self.sinks.items()})
        self._steps_lock = threading.Lock()
        self.readers = [StoreReader(sink.path) for sink in self.sinks.values()]  # episode outcomes, for logs
        # Transitions stored so far: rows less the final row of each finished episode.
        self._online_steps = sum(r.num_rows - sum(e.finished for e in r.episodes) for r in self.readers)
        self.batch_size = self.agent_cfg.batch_size * getattr(self.agent_cfg, "utd_ratio", 1)
        self.demo_ratio = getattr(self.agent_cfg, "demo_ratio", 0.0)

    def _on_steps(self, actor: str, first_seq: int, steps: list[dict]) -> None:
        self.sinks[actor].on_steps(first_seq, steps)
        with self._steps_lock:
            self._online_steps += sum(not s["final"] for s in steps)

    @property
    def env_steps(self) -> int:
        with self._steps_lock:
            return self._online_steps

    def publish(self, done: bool = False) -> None:
        snap = self.agent.snapshot()
        save_snapshot(str(self.run / SNAPSHOT), snap)
        # Versions from the clock keep rising across a learner restart (updates may step back to a checkpoint).
        self.server.publish(snapshot_bytes(snap), version=time.time_ns() // 1000,
                            metadata={"updates": self.updates, "env_steps": self.env_steps, "done": done})

    def checkpoint(self) -> None:
        save_checkpoint(str(self.run / CHECKPOINT), self.agent,
                        extra={"updates": self.updates, "sampler_rng": self.rng.bit_generator.state})

    def run_until_done(self, progress=None) -> dict:
        cfg = self.cfg.learner
        self.server.start()
        self.publish()
        started = last_ckpt = last_log = last_tail = time.monotonic()
        writer = _tensorboard(self.run / "tb")
        info: dict = {}
        try:
            while not self.stop_event.is_set():
                env_steps = self.env_steps
                if env_steps >= cfg.env_steps:
                    break
                now = time.monotonic()
                if now - last_tail > 0.5:
                    self.mirror.tail()
                    last_tail = now
                may_update = (env_steps >= cfg.start_after_steps and self.mirror.num_steps > 0
                              and self.updates < env_steps * cfg.updates_per_step)
                if may_update:
                    ratio = symmetric_ratio(self.mirror.steps_by_source(), self.demo_ratio)
                    batch = self.mirror.sample(self.batch_size, self.rng, n_step=cfg.n_step,
                                               gamma=self.agent_cfg.discount, source_ratio=ratio)
                    self.agent, info = self.agent.update(batch)
                    self.updates += 1
                    if self.updates % cfg.snapshot_every_updates == 0:
                        self.publish()
                else:
                    time.sleep(0.01)
                if now - last_ckpt > cfg.checkpoint_every_s:
                    self.checkpoint()
                    last_ckpt = now
                if now - last_log > cfg.log_every_s:
                    self._log(writer, info, now - started, progress)
                    last_log = now
            self.checkpoint()
            self.publish(done=self.env_steps >= cfg.env_steps)
            record = self._log(writer, info, time.monotonic() - started, progress)
            # Give the actors a moment to hear "done" before the socket closes.
            time.sleep(1.0)
            return record
        finally:
            writer.close()
            self.close()

    def _log(self, writer, info: dict, wall_s: float, progress) -> dict:
        for reader in self.readers:
            reader.refresh()
        episodes = [e for r in self.readers for e in r.episodes if e.finished]
        recent = episodes[-20:]
        record = {"wall_s": round(wall_s, 1), "env_steps": self.env_steps, "updates": self.updates,
                  "episodes": len(episodes),
                  "success_rate": round(float(np.mean([e.success for e in recent])), 3) if recent else None,
                  **{k: round(float(v), 4) for k, v in info.items() if np.ndim(v) == 0}}
        with open(self.run / PROGRESS, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "env_steps":
                writer.add_scalar(key, value, record["env_steps"])
        if progress is not None:
            progress(record)
        return record

    def close(self) -> None:
        self.server.close()
        for sink in self.sinks.values():
            sink.close()


def _tensorboard(path: Path):
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(path))


def spaces_from_store(store_path) -> tuple:
    """Observation and action spaces of the data in a store (for a learner with no env at hand)."""
    import gymnasium as gym

    reader = StoreReader(store_path)
    if reader.obs_spec is None:
        raise ValueError(f"{store_path} holds no steps yet, so its observation spaces are unknown")
    obs = {k: gym.spaces.Box(0, 255, shape, np.uint8) if dtype == np.uint8
           else gym.spaces.Box(-np.inf, np.inf, shape, np.float32) for k, (shape, dtype) in reader.obs_spec.items()}
    return gym.spaces.Dict(obs), gym.spaces.Box(-1.0, 1.0, (reader.action_dim,), np.float32)


def install_stop_handlers(learner: Learner) -> None:
    """SIGTERM/SIGINT finish the current update, checkpoint and exit cleanly."""
    def stop(signum, frame):
        learner.stop_event.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
