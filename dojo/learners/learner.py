"""The one learner: an agent trained on replay stores, for every way dojo trains.

- Offline pre-training: `learner.offline_updates` updates on the offline stores (demos) before anything else.
- Online: actors' steps land in RUN/replay/<actor>.zarr, from actor processes over the link (`run()`), or from
  an in-process actor that `run(actor)` steps in turn with the live agent. Updates follow the env steps:
  at most `updates_per_step` per step once `start_after_steps` steps are in.
- Offline-to-online: `agent.init` starts from any checkpoint (Cal-QL, RLPD, WSRL). WSRL's warm-up of the
  frozen policy is `start_after_steps` with no offline data retained (no demos, or `demo_ratio` 0).

Batches mix sources symmetrically (`demo_ratio` of demos once online data exists). The learner publishes
policy snapshots, evaluates in an env when given one, checkpoints, logs, and resumes a run where it stopped.
The run folder's layout is `dojo.runs`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import jax
import numpy as np

from dojo import runs
from dojo.learners import agent_config, preset_agent
from dojo.learners.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from dojo.learners.devices import DataParallel
from dojo.learners.report import tensorboard_writer
from dojo.link import LinkServer, StoreSink, row_schema
from dojo.policies.evaluation import evaluate, policy_act
from dojo.policies.networks import CriticEnsemble
from dojo.policies.snapshot import save_snapshot, snapshot_bytes, with_critic
from dojo.policies.spaces import ObsAdapter, ObsSpec
from dojo.replay.sampler import ReplayMirror, symmetric_ratio
from dojo.replay.store import EpisodeWriter, StoreReader
from dojo.rewards.interventions import episode_rlif_reward

log = logging.getLogger("dojo.learner")

_MAX_UPDATES_PER_TICK = 50  # keeps a serving learner responsive to stop requests and logging


def sampled_n_step(learner_cfg, agent_config) -> int:
    """The return length of sampled batches: `learner.n_step`, or when that is null the agent's (1 if it has none)."""
    n_step = learner_cfg.n_step
    return int(getattr(agent_config, "n_step", 1) if n_step is None else n_step)


def agent_overrides(cfg, agent_name: str) -> dict:
    """The run's `agent.<agent file>` options; options set for another agent file are a mistake."""
    for other, options in cfg.agent.items():
        if other not in ("name", "init", agent_name) and options:
            raise ValueError(f"agent.{other} options {dict(options)} are set, but the agent is {agent_name!r} "
                             f"(agent.name={cfg.agent.name}); set them as agent.{agent_name}.KEY")
    options = cfg.agent.get(agent_name) or {}
    return {k: tuple(v) if type(v).__name__ == "ListConfig" else v for k, v in dict(options).items()}


def state_stats(mirror: ReplayMirror, min_std: float = 1e-2, samples: int = 20_000, seed: int = 0) -> dict:
    """Mean and std of the state over the demos (all steps when there are none), for an agent's obs_stats.

    The std is floored at `min_std` so dims that are constant in demos (the held quaternion, a resting
    velocity) do not turn small online deviations into huge inputs."""
    ratio = {"demo": 1.0} if mirror.steps_by_source()["demo"] else None
    states = mirror.sample(samples, np.random.default_rng(seed), source_ratio=ratio)["obs"]["state"]
    return {"state_mean": states.mean(0), "state_std": np.maximum(states.std(0), min_std)}


class LivePolicy:
    """An agent that is still learning, as a policy (`act_normalized`, as a snapshot's Policy has it): what the
    in-process actor and in-loop evaluations act with. `agent()` returns the current agent."""

    def __init__(self, agent, seed: int) -> None:
        self.agent, self.key = agent, jax.random.PRNGKey(seed)

    def act_normalized(self, obs: dict, deterministic: bool = False) -> np.ndarray:
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        if deterministic:
            return np.asarray(self.agent().sample_actions(batch))[0]
        self.key, key = jax.random.split(self.key)
        return np.asarray(self.agent().sample_actions(batch, key))[0]


class Learner:
    def __init__(self, run_dir: str | os.PathLike, cfg, obs_space, action_space, *, serve: bool = True,
                 eval_env=None, reward_service=None) -> None:
        """`serve`: take actors' steps over the link; otherwise an in-process actor writes to `journals`.
        `eval_env` (a canonical env) is where the policy is evaluated every `learner.eval_every`.
        `reward_service` (dojo.rewards.service.RewardService, with `serve`) labels actors' frames; closed here."""
        self.reward_service = reward_service
        self.run, self.cfg, self.lc, self.eval_env = Path(run_dir), cfg, cfg.learner, eval_env
        self.stop_event = threading.Event()
        self.updates, self.rng = 0, np.random.default_rng(cfg.seed)
        self._first_started = runs.first_started(self.run)
        self.obs_spec = ObsAdapter(obs_space).spec
        self.action_dim = int(action_space.shape[0])
        mode = cfg.intervention.mode
        reward_fn = episode_rlif_reward if mode in ("rlif", "both") else None
        copy_interventions = mode in ("hil-serl", "both")

        # The stores: offline data first, then one per actor. The mirror holds Monte-Carlo returns (Cal-QL's
        # bound) at the agent's discount, whatever discount a store was written with.
        obs_keys, capacity = ("state", *self.obs_spec.camera_keys), int(self.lc.capacity_steps)
        self.language = language_encoder(cfg)
        if cfg.demos.store and (self.language is not None or self.lc.get("relabel", "")):
            self.mirror = offline_mirror(cfg, capacity, obs_keys, self.language, self.run)
        else:
            gamma = _agent_discount(cfg, self.run)
            self.mirror = (ReplayMirror.from_store(cfg.demos.store, capacity, obs_keys=obs_keys, mc_gamma=gamma)
                           if cfg.demos.store else ReplayMirror(capacity, mc_gamma=gamma))
        self.journals: dict[str, EpisodeWriter] = {}
        self.sinks: dict[str, StoreSink] = {}
        self.store_spec = {"state": ((self.obs_spec.state_dim,), np.float32),
                           **{k: (shape, np.uint8) for k, shape in self.obs_spec.cameras}}
        for actor in cfg.learner.actors:
            path = self.run / runs.REPLAY / f"{actor}.zarr"
            if serve:
                self.sinks[actor] = StoreSink(path)
                writer = self.sinks[actor].writer
            else:  # the in-process actor writes here itself; a killed run loses at most the last second
                writer = self.journals[actor] = EpisodeWriter(path, obs_spec=self.store_spec,
                                                              action_dim=self.action_dim)
            self.mirror.follow(writer.path, obs_keys=obs_keys, reward_fn=reward_fn,
                               copy_interventions=copy_interventions,
                               copy_successes=bool(self.lc.imitate_successes))
        self.writers = [s.writer for s in self.sinks.values()] + list(self.journals.values())
        self.readers = [StoreReader(w.path) for w in self.writers]  # the actors' episode outcomes, for logs
        self._closed_episodes = sum(w.committed_episodes for w in self.writers)
        self._steps_lock = threading.Lock()
        # Transitions stored so far: rows less the final row of each finished episode.
        self._env_steps = sum(r.num_rows - sum(e.finished for e in r.episodes) for r in self.readers)

        self.agent, self.preset = self._make_agent(obs_space, action_space)
        self.batch_size = self.agent.config.batch_size * getattr(self.agent.config, "utd_ratio", 1)
        self.parallel = DataParallel(self.lc.devices)
        self.parallel.check_batch_size(self.batch_size)
        self.agent = self.parallel.agent(self.agent)
        agent_ratio = getattr(self.agent.config, "demo_ratio", 0.0)
        self.demo_ratio = agent_ratio if self.lc.demo_ratio is None else float(self.lc.demo_ratio)
        self.n_step = sampled_n_step(self.lc, self.agent.config)
        self.server = None
        if serve:
            self.server = LinkServer(self._on_steps, self.run / runs.KEYS, host=cfg.link.host, port=cfg.link.port,
                                     last_seq_by_actor={a: s.last_seq for a, s in self.sinks.items()},
                                     schema=row_schema(self.store_spec, self.action_dim),
                                     status=lambda: {"lead_steps": self.lead_steps(), "done": self.budget_spent()},
                                     scorer=reward_service)
        self.live_policy = LivePolicy(lambda: self.agent, cfg.seed)
        self._starved = self._done = False
        self._progress, self._info, self._tb = None, {}, None
        self._started = self._last_ckpt = self._last_log = time.monotonic()
        self.last_eval: dict = {}
        self._last_record: dict = {}
        self._eval_s = 0.0
        self._eval_mark, self._evaluated_at = self._eval_clock(), None

    # -- set-up -----------------------------------------------------------------------------------
    def _make_agent(self, obs_space, action_space):
        """Resume this run's checkpoint; else start from agent.init; else a fresh agent of agent.name."""
        ckpt = self.run / runs.CHECKPOINT
        if ckpt.exists():
            agent, extra = load_checkpoint(str(ckpt))
            self.updates = int(extra["updates"])
            self.rng.bit_generator.state = extra["sampler_rng"]
            log.info("resumed from %s at %d updates", ckpt, self.updates)
            return agent, extra.get("preset", "")
        if self.cfg.agent.init:
            path = runs.checkpoint_path(self.cfg.agent.init)
            agent_name = read_checkpoint(str(path))[0]["agent"]
            agent, _ = load_checkpoint(str(path), agent_overrides(self.cfg, agent_name))
            log.info("starting from %s (a %s agent)", path, agent_name)
            return agent, f"init:{path}"
        preset = self.cfg.agent.name
        module, config = agent_config(preset, agent_overrides(self.cfg, preset_agent(preset)))
        stats = None
        if self.lc.normalize == "demos":
            if self.mirror.num_steps == 0:
                raise ValueError("learner.normalize=demos needs demos (demos.store) to take the statistics from")
            stats = state_stats(self.mirror)
        if self.language is not None:  # the agent sees the state with the instruction's embedding appended
            obs_space = ObsSpec(self.obs_spec.state_dim + self.language.dim, self.obs_spec.cameras)
        return module.create(self.cfg.seed, obs_space, action_space, config, obs_stats=stats), preset

    # -- the budgets ------------------------------------------------------------------------------
    @property
    def env_steps(self) -> int:
        with self._steps_lock:
            return self._env_steps

    def budget_spent(self) -> bool:
        """The run's budgets: `learner.env_steps`, and `learner.max_wall_s` from the run's first start."""
        wall = float(self.lc.get("max_wall_s", 0.0))
        return self.env_steps >= int(self.lc.env_steps) or bool(wall and time.time() - self._first_started >= wall)

    def update_budget(self, env_steps: int) -> int:
        """Updates allowed so far: the offline ones, then `updates_per_step` per online step after the warm-up."""
        online = max(0, env_steps - int(self.lc.start_after_steps)) * float(self.lc.updates_per_step)
        return int(self.lc.offline_updates) + int(online)

    def lead_steps(self) -> int:
        """Env steps stored beyond those the updates so far have used: how far the actors run ahead of
        learning (0 while the learner has nothing to sample, so that no actor waits for it)."""
        used = int(self.lc.start_after_steps) + (self.updates - int(self.lc.offline_updates)) / float(
            self.lc.updates_per_step)
        return 0 if self._starved else max(0, self.env_steps - int(used))

    def _on_steps(self, actor: str, first_seq: int, steps: list[dict]) -> None:
        self.sinks[actor].on_steps(first_seq, steps)
        with self._steps_lock:
            self._env_steps += sum(not s["final"] for s in steps)

    # -- one round of work ------------------------------------------------------------------------
    def tick(self, max_updates: int = _MAX_UPDATES_PER_TICK) -> int:
        """Take in newly closed episodes, update as far as the budget allows (at most `max_updates`), and
        evaluate, checkpoint and log when due. Returns the updates made."""
        closed = sum(w.committed_episodes for w in self.writers)
        if closed != self._closed_episodes:
            self._closed_episodes = closed
            self.mirror.tail()
        budget = min(self.update_budget(self.env_steps), self.updates + max_updates)
        made = 0
        self._starved = False  # the actors keep to the lead while this runs (the first update compiles a while)
        while self.updates < budget and self._update():
            made += 1
        self._starved = self.updates < budget
        if self._eval_clock()[1] > 0 and self._eval_clock() != self._eval_mark:
            self.evaluate()
            self.log()
        now = time.monotonic()
        if now - self._last_ckpt > self.lc.checkpoint_every_s:
            self.checkpoint()
        if now - self._last_log > self.lc.log_every_s:
            self.log()
        return made

    def _eval_clock(self) -> tuple[str, int]:
        """Evaluations fall due every `eval_every` updates while pre-training offline, then every
        `eval_every` env steps."""
        every = int(self.lc.eval_every)
        if self.eval_env is None or not every:
            return ("never", 0)
        env_steps = self.env_steps
        return ("offline", self.updates // every) if env_steps == 0 else ("online", env_steps // every)

    def _update(self) -> bool:
        """One update on a sampled batch; False when there is nothing to sample yet."""
        by_source = self.mirror.steps_by_source()
        online = self.mirror.num_steps - by_source["demo"]
        offline_phase = self.updates < int(self.lc.offline_updates)
        if self.mirror.num_steps == 0 or (self.demo_ratio == 0.0 and online == 0 and not offline_phase):
            return False  # a demo_ratio of 0 (WSRL) samples online data only, once there is some
        ratio = None if offline_phase else symmetric_ratio(by_source, self.demo_ratio)
        batch = self.mirror.sample(self.batch_size, self.rng, n_step=self.n_step,
                                   gamma=self.agent.config.discount, source_ratio=ratio)
        self.agent, self._info = self.agent.update(self.parallel.batch(batch))
        self.updates += 1
        if self.server is not None and self.updates % int(self.lc.snapshot_every_updates) == 0:
            self.publish()
        return True

    # -- the whole run ----------------------------------------------------------------------------
    def run_until_done(self, actor=None, progress=None, on_listening=None) -> dict:
        """Pre-train offline, then learn online until `learner.env_steps`: from `actor` (in process: each of
        its `step()`s alternates with the updates it allows) or, without one, from actor processes over the
        link (`on_listening()` is called once the link listens). Ends with a checkpoint (also on Ctrl-C, which
        it then passes on) and returns the last record."""
        self._progress = progress
        self._started = self._last_ckpt = self._last_log = time.monotonic()
        try:
            try:
                self._learn(actor, on_listening)
                interrupted = False
            except KeyboardInterrupt:  # in process: keep what was learned
                self.stop_event.set()
                interrupted = True
            record = self._finish()
            if interrupted:
                raise KeyboardInterrupt
            return record
        finally:
            self.close()

    def _learn(self, actor, on_listening) -> None:
        offline = self.updates < int(self.lc.offline_updates)
        if offline and self.mirror.num_steps == 0:
            raise ValueError(f"learner.offline_updates={self.lc.offline_updates} but the offline stores hold "
                             f"no steps (demos.store={self.cfg.demos.store!r})")
        while self.updates < int(self.lc.offline_updates) and not self.stop_event.is_set():
            self.tick()
        if offline and not self.stop_event.is_set():
            # a learner killed from here on resumes online: from the last timed checkpoint it would run part of its
            # offline phase again, publishing no policy meanwhile, and its actors give up waiting for one
            self.checkpoint()
        if self.server is not None:  # actors connect once the offline policy is ready
            self.server.start()
            runs.write_link_info(self.run, self.server.host, self.server.port)
            if on_listening is not None:
                on_listening()
        self.publish()
        while not self.budget_spent() and not self.stop_event.is_set():
            if actor is None:
                if self.tick() == 0:
                    time.sleep(0.005)
                continue
            if actor.done:
                break
            if actor.step():
                with self._steps_lock:
                    self._env_steps += 1
            self.tick(max_updates=1 << 30)
        self._done = self.budget_spent()  # actors hear it with their next ack
        while not self.stop_event.is_set() and self.tick() > 0:
            pass  # the updates the collected steps still allow

    def _finish(self) -> dict:
        """Evaluate the final policy (unless that was just done), checkpoint, tell the actors, log."""
        evaluating = self.eval_env is not None and self.lc.eval_every and not self.stop_event.is_set()
        if evaluating and self._evaluated_at != (self.updates, self.env_steps):
            self.evaluate()
        self.checkpoint()
        self.publish(done=self._done)
        last = self._last_record
        record = last if (last.get("updates"), last.get("env_steps")) == (self.updates, self.env_steps) else self.log()
        if self.server is not None:  # the actors hear "done" and send what they still hold: take it (<= 10 s)
            deadline, seen = time.monotonic() + 10.0, -1
            while time.monotonic() < deadline and (stored := self.server.stats().get("steps_stored", 0)) != seen:
                seen = stored
                time.sleep(1.0)
        return record

    # -- outputs ----------------------------------------------------------------------------------
    def publish(self, done: bool = False) -> None:
        if self.server is None:
            return
        # Versions from the clock keep rising across a learner restart (updates may step back to a checkpoint).
        self.server.publish(snapshot_bytes(self.agent.snapshot()), version=time.time_ns() // 1000,
                            metadata={"updates": self.updates, "env_steps": self.env_steps, "done": done})

    def checkpoint(self) -> None:
        save_checkpoint(str(self.run / runs.CHECKPOINT), self.agent, extra={
            "updates": self.updates, "sampler_rng": self.rng.bit_generator.state, "preset": self.preset})
        save_snapshot(str(self.run / runs.SNAPSHOT), self.saved_snapshot())
        self._last_ckpt = time.monotonic()

    def saved_snapshot(self):
        """The snapshot RUN/policy.msgpack holds: the policy, and the target critic of an agent that has one with
        the language encoder it was conditioned on (what V-GPS steering scores with; the link carries the policy
        alone)."""
        snap = self.agent.snapshot()
        critic = next((m for m in getattr(self.agent, "modules", ()) if isinstance(m, CriticEnsemble)), None)
        params = getattr(self.agent, "target_critic_params", None)
        if critic is None or params is None:
            return snap
        language = {"id": self.language.id, "dim": self.language.dim} if self.language is not None else None
        return with_critic(snap, critic, params, language)

    def evaluate(self) -> dict:
        started = time.monotonic()
        self._eval_mark, self._evaluated_at = self._eval_clock(), (self.updates, self.env_steps)
        self.last_eval = evaluate(self.eval_env, policy_act(self.live_policy), int(self.lc.eval_episodes),
                                  seed=1_000_000 + self.env_steps + self.updates)
        self._eval_s += time.monotonic() - started
        return self.last_eval

    def log(self) -> dict:
        for reader in self.readers:
            reader.refresh()
        episodes = [e for r in self.readers for e in r.episodes if e.finished]
        recent = episodes[-20:]
        wall_s = time.monotonic() - self._started
        record = {"wall_s": round(wall_s, 1), "train_wall_s": round(wall_s - self._eval_s, 1),
                  "env_steps": self.env_steps, "updates": self.updates, "episodes": len(episodes),
                  "success_rate": round(float(np.mean([e.success for e in recent])), 3) if recent else None,
                  # an evaluation goes with the record of the moment it was made
                  **{f"eval_{k}": v for k, v in self.last_eval.items()
                     if self._evaluated_at == (self.updates, self.env_steps)},
                  **{k: round(float(v), 4) for k, v in self._info.items() if np.ndim(v) == 0}}
        with open(self.run / runs.PROGRESS, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is None:
            self._tb = tensorboard_writer(self.run / "tb")
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "env_steps":
                self._tb.add_scalar(key, value, record["env_steps"] or record["updates"])
        if self._progress is not None:
            self._progress(record)
        self._last_log, self._last_record = time.monotonic(), record
        return record

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.reward_service is not None:
            self.reward_service.close()
            self.reward_service = None
        for sink in self.sinks.values():
            sink.close()
        for journal in self.journals.values():
            journal.close()
        self.sinks, self.journals = {}, {}


def language_encoder(cfg):
    """The run's learner.language_encoder (a LanguageEncoder), or None. Conditioning is for offline training:
    actors' stores hold no embeddings."""
    folder = cfg.learner.get("language_encoder", "")
    if not folder:
        return None
    if int(cfg.learner.env_steps) > 0:
        raise ValueError(f"learner.language_encoder conditions offline training (dojo learn --offline) only; "
                         f"this run asks for learner.env_steps={cfg.learner.env_steps} online steps")
    from dojo.policies.language import load_language_encoder

    return load_language_encoder(folder)


def offline_mirror(cfg, capacity: int, obs_keys: tuple, language=None, run: Path | None = None) -> ReplayMirror:
    """demos.store in a mirror, each episode's instruction embedding (through `language`) appended to its
    states, and with learner.relabel=vgps[-success] V-GPS's rewards (dojo.rewards.relabel.vgps_episode_pieces)
    at the agent's discount."""
    from dojo.rewards.relabel import vgps_episode_pieces

    reader = StoreReader(cfg.demos.store)
    relabel, gamma = cfg.learner.get("relabel", ""), _agent_discount(cfg, run)
    mirror = ReplayMirror(capacity, mc_gamma=gamma, failure_reward=reader.failure_reward)
    for first in range(0, reader.num_episodes, 256):
        for ep in reader.read_episodes(first, min(first + 256, reader.num_episodes), obs_keys):
            if ep.info.num_steps == 0:
                continue
            if language is not None:
                if not ep.info.instruction:
                    raise ValueError(f"episode {ep.info.index} of {cfg.demos.store} has no instruction; "
                                     f"learner.language_encoder needs stores whose episodes carry instructions")
                embedding = language.encode([ep.info.instruction])[0]
                state = ep.obs["state"]
                ep.obs["state"] = np.concatenate([state, np.broadcast_to(embedding, (len(state), embedding.size))],
                                                 axis=1).astype(np.float32)
            if relabel:
                for piece in vgps_episode_pieces(ep, gamma, failures=relabel == "vgps-success"):
                    mirror.add_episode(**piece)
            else:
                mirror.add_episode(ep.obs, ep.action, ep.reward, ep.terminal, ep.truncated, ep.intervened,
                                   source=ep.info.source, mc_return=ep.mc_return if reader.mc_gamma == gamma else None,
                                   _finished=ep.info.finished)
    return mirror


def _agent_discount(cfg, run: Path | None) -> float:
    """The discount of the agent this run trains: its checkpoint's when it resumes, agent.init's, or its preset's."""
    if run is not None and (run / runs.CHECKPOINT).exists():
        return float(json.loads(read_checkpoint(str(run / runs.CHECKPOINT))[0]["config"])["discount"])
    if cfg.agent.init:  # its options apply over the checkpoint's, as _make_agent loads it
        meta = read_checkpoint(str(runs.checkpoint_path(cfg.agent.init)))[0]
        return float(agent_overrides(cfg, meta["agent"]).get("discount", json.loads(meta["config"])["discount"]))
    return float(agent_config(cfg.agent.name, agent_overrides(cfg, preset_agent(cfg.agent.name)))[1].discount)


def spaces_of(obs_spec, action_dim: int) -> tuple:
    """gymnasium spaces for an ObsSpec and an action dimension (a learner with no env at hand)."""
    import gymnasium as gym

    obs = {"state": gym.spaces.Box(-np.inf, np.inf, (obs_spec.state_dim,), np.float32)}
    obs.update({k: gym.spaces.Box(0, 255, shape, np.uint8) for k, shape in obs_spec.cameras})
    return gym.spaces.Dict(obs), gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

