"""The actor process: runs RobotEnv with the newest policy snapshot, journals every step on local disk and
streams it to the learner; while the learner is unreachable it acts on with the last snapshot it has.

Imports policies/ and replay/ only (never learners/, optax or torch), so a robot machine stays light.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time

import numpy as np

from dojo.policies.snapshot import Policy, snapshot_from_bytes
from dojo.replay.link import LinkClient
from dojo.replay.stream import StoreJournal
from dojo.robot.interfaces import WallClock

log = logging.getLogger("dojo.actor")


@dataclasses.dataclass(frozen=True)
class ActorConfig:
    actor_id: str = "actor-0"
    random_steps: int = 500  # uniform random actions for the first steps (and until a snapshot arrives)
    max_lead_steps: int = 0  # wait while the learner's data is this far ahead of its updates (0: never)
    updates_per_step: float = 1.0  # the learner's update budget per env step, to judge the lead
    realtime: bool = False  # pace the control loop on the wall clock (for a twin; hardware paces itself)
    robot: str = "sim-twin"
    seed: int = 0


class Actor:
    def __init__(self, env, journal_path, learner: str, keys_dir, config: ActorConfig = ActorConfig()) -> None:
        self.env, self.config = env, config
        self.journal = StoreJournal(journal_path)
        self.client = LinkClient(self.journal, learner, keys_dir, actor=config.actor_id)
        self.stop_event = threading.Event()
        self.policy: Policy | None = None
        self.version = -1
        self.learner_meta: dict = {}
        self.rng = np.random.default_rng(config.seed)
        self.steps = self.episodes = self.successes = self.interventions = 0

    def _refresh_policy(self) -> None:
        snap = self.client.latest_params()
        if snap is not None and snap.version != self.version:
            self.policy = Policy(snapshot_from_bytes(snap.blob), seed=self.config.seed)
            self.version, self.learner_meta = snap.version, dict(snap.metadata)

    def _wait_for_learner(self) -> None:
        """In a twin, hold back while this actor's steps run more than max_lead_steps ahead of the
        learner's updates (as of its last snapshot), so the update-to-data ratio holds at sim speed."""
        cfg = self.config
        while cfg.max_lead_steps > 0 and not self.stop_event.is_set() and self.client.status().connected:
            meta = self.learner_meta
            lead = self.steps - meta.get("updates", 0) / cfg.updates_per_step
            if self.steps < cfg.random_steps or lead <= cfg.max_lead_steps or meta.get("done"):
                return
            time.sleep(0.01)
            self._refresh_policy()

    def act(self, obs) -> np.ndarray:
        if self.policy is None or self.steps < self.config.random_steps:
            return self.rng.uniform(-1.0, 1.0, self.env.action_space.shape).astype(np.float32)
        return self.policy(obs, deterministic=False)

    def run(self, max_steps: int | None = None) -> dict:
        env, task = self.env, self.env.task
        clock = WallClock() if self.config.realtime else None
        if clock is not None:
            # The journal and link threads hold the GIL in short bursts; a short switch interval lets the
            # control loop take it back within a fraction of a millisecond when its period is up.
            sys.setswitchinterval(0.0005)
        obs, info = env.reset(seed=self.config.seed * 1_000_003 + self.episodes)
        getattr(env.teleop, "reset", lambda: None)()
        self.journal.begin_episode(source="online", task=task.name, instruction=task.instruction,
                                   operator="policy", robot=self.config.robot,
                                   reset_seed=self.config.seed * 1_000_003 + self.episodes)
        interventions = intervened_steps = episode_steps = 0
        was_intervened = False
        try:
            while not self.stop_event.is_set() and (max_steps is None or self.steps < max_steps):
                self._refresh_policy()
                if self.learner_meta.get("done"):
                    break
                self._wait_for_learner()
                action = self.act(obs)
                if hasattr(env.teleop, "observe"):  # a watching operator sees what the policy proposes
                    env.teleop.observe(obs, action)
                next_obs, reward, terminated, truncated, info = env.step(action)
                self.journal.add_step(obs, info["executed_action"], reward, terminated, truncated, info=info)
                obs, self.steps = next_obs, self.steps + 1
                episode_steps += 1
                intervened_steps += bool(info["intervened"])
                interventions += bool(info["intervened"]) and not was_intervened
                was_intervened = bool(info["intervened"])
                if terminated or truncated:
                    self.journal.end_episode(obs, success=bool(info["success"]))
                    log.info("episode %d: success %s, %d steps, %d interventions over %d steps", self.episodes,
                             bool(info["success"]), episode_steps, interventions, intervened_steps)
                    self.interventions += interventions
                    interventions = intervened_steps = episode_steps = 0
                    was_intervened = False
                    self.episodes, self.successes = self.episodes + 1, self.successes + bool(info["success"])
                    if info.get("estop"):
                        log.warning("e-stop: %s; the actor stops", env.estop.reason)
                        break
                    obs, info = env.reset(seed=self.config.seed * 1_000_003 + self.episodes)
                    getattr(env.teleop, "reset", lambda: None)()
                    self.journal.begin_episode(source="online", task=task.name, instruction=task.instruction,
                                               operator="policy", robot=self.config.robot,
                                               reset_seed=self.config.seed * 1_000_003 + self.episodes)
                if clock is not None:
                    clock.wait(env.period_s)
        finally:
            self.close()
        return {"steps": self.steps, "episodes": self.episodes, "successes": self.successes,
                "interventions": self.interventions, "params_version": self.version}

    def close(self, drain_s: float = 30.0) -> None:
        """Commit the journal and give the learner up to `drain_s` to acknowledge it; what is still
        unacknowledged then stays in the journal and goes with the next run of this actor."""
        self.journal.flush()
        deadline = time.monotonic() + drain_s
        while self.client.status().acked_seq < self.journal.committed_seq and time.monotonic() < deadline:
            time.sleep(0.05)
        status = self.client.status()
        if status.acked_seq < self.journal.committed_seq:
            log.warning("%d journaled steps not yet acknowledged by the learner; they are sent on the next run",
                        self.journal.committed_seq - status.acked_seq)
        self.client.close()
        self.journal.close()
