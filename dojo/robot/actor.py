"""The actor: runs an env with a policy it was given and records every step, in the learner's process or as
a process of its own on the robot machine.

Over the link it journals every step on local disk and streams it to the learner, acting with the newest
snapshot it received. It never acts without a policy it was given: until the first snapshot arrives (and on
a robot, whenever the learner is unreachable) it holds the arm still and says so, and it gives up with a
non-zero exit after `give_up_s`. Random actions happen only when asked for (`random_steps`). A learner
that refuses this actor (its keys, its id or its observations) stops it with the learner's reason.

Imports policies/ and link/ only (never learners/, optax or torch), so a robot machine stays light.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time

import numpy as np

from dojo.errors import DojoError
from dojo.policies.snapshot import Policy, snapshot_from_bytes
from dojo.robot.interfaces import WallClock

log = logging.getLogger("dojo.actor")

WITHOUT_LEARNER = ("act", "hold")
_HOLD_TICK_S = 0.1
_FIRST_POLICY_QUIET_S = 1.0  # a normal start waits a fraction of a second for its first snapshot: no message
_HOLD_REPORT_S = 5.0


@dataclasses.dataclass(frozen=True)
class ActorConfig:
    actor_id: str = "actor-0"
    random_steps: int = 0  # uniform random actions for the first steps: only when asked for
    without_learner: str = "act"  # learner unreachable: act on with the last policy (a twin) or hold (a robot)
    give_up_s: float = 120.0  # holding this long without a policy to act with: stop with an error
    max_lead_steps: int = 0  # wait while the actors' data is this far ahead of the learner's updates (0: never)
    realtime: bool = False  # pace the control loop on the wall clock (for a twin; hardware paces itself)
    robot: str = "sim-twin"
    seed: int = 0
    noise_scale: float = 1.0  # the policy's exploration noise, scaled: 1 samples the policy, 0 acts with its mode

    def __post_init__(self) -> None:
        if not (isinstance(self.noise_scale, (int, float)) and 0.0 <= self.noise_scale <= 1.0):
            raise ValueError(f"actor.noise_scale must be a number in [0, 1], got {self.noise_scale!r}")
        if self.without_learner not in WITHOUT_LEARNER:
            raise ValueError(f"actor.without_learner must be one of {WITHOUT_LEARNER}, got {self.without_learner!r}")
        if not self.give_up_s > 0:
            raise ValueError(f"actor.give_up_s must be > 0, got {self.give_up_s!r}")


class Actor:
    """Steps a canonical env (dojo.policies.spaces.CanonicalEnv) into `journal` (begin_episode / add_step /
    end_episode, as an EpisodeWriter or StoreJournal has them). The policy is either fixed (`policy`, e.g. the
    in-process learner's live agent) or the newest snapshot from `client` (a LinkClient)."""

    def __init__(self, env, journal, config: ActorConfig = ActorConfig(), *, client=None, policy=None) -> None:
        if (client is None) == (policy is None):
            raise ValueError("an Actor needs exactly one of client (a link to a learner) or policy")
        self.env, self.journal, self.config, self.client = env, journal, config, client
        self.robot = env.unwrapped  # a RobotEnv has task, teleop, e-stop and hold(); any gymnasium env works
        task = getattr(self.robot, "task", None)
        self.task_name = task.name if task is not None else (env.spec.id if env.spec else type(self.robot).__name__)
        self.instruction = task.instruction if task is not None else ""
        self.policy = policy
        self.version = -1
        self.learner_meta: dict = {}
        self.rng = np.random.default_rng(config.seed)
        self.stop_event = threading.Event()
        self.done = False
        self.gave_up = False  # stopped for want of a policy (its learner unreachable): nothing to drain to
        self.steps = self.episodes = self.successes = self.interventions = 0
        self._obs = None
        self._clock = WallClock() if config.realtime else None
        self._holding_since: float | None = None
        self._reported_hold_s: float | None = None

    # -- the policy ------------------------------------------------------------------------------
    def _refresh_policy(self) -> None:
        params = self.client.latest_params()
        if params is not None and params.version != self.version:
            self.policy = Policy(snapshot_from_bytes(params.blob), seed=self.config.seed)
            self.version, self.learner_meta = params.version, dict(params.metadata)

    def _why_hold(self) -> str | None:
        """Why the actor may not act now (None: it may). Raises when the learner refused it. Random steps too
        need a learner that answers this actor."""
        if self.client is None:
            return None
        status = self.client.status()
        if status.refused:
            raise DojoError(status.refused)
        exploring = self.steps < self.config.random_steps and status.connected  # random actions need no policy
        if self.policy is None and not exploring:
            return f"no policy from the learner at {self.client.learner} yet"
        if not status.connected and self.config.without_learner == "hold":
            return f"the learner at {self.client.learner} is unreachable (silent {status.silent_for_s:.0f} s)"
        return None

    def _hold(self, why: str) -> None:
        """Keep the arm where it is and wait a tick; say so (at once, or after a second while the first
        snapshot is on its way), then every few seconds; give up in time."""
        now = time.monotonic()
        if self._holding_since is None:
            self._holding_since, self._reported_hold_s = now, None
            getattr(self.robot, "hold", lambda: None)()
        held_s = now - self._holding_since
        first = _FIRST_POLICY_QUIET_S if self.policy is None else 0.0
        due = first if self._reported_hold_s is None else self._reported_hold_s + _HOLD_REPORT_S
        if held_s >= due:
            log.warning("holding the arm still: %s", why)
            self._reported_hold_s = held_s
        if held_s >= self.config.give_up_s:
            self.gave_up = True
            raise DojoError(f"gave up after holding the arm still for {held_s:.0f} s: {why}")
        time.sleep(_HOLD_TICK_S)

    def _wait_for_learner(self) -> None:
        """In a twin, hold back while the stored steps run more than max_lead_steps ahead of the learner's
        updates (the `lead_steps` of its last ack, plus this actor's steps it has not acknowledged yet), so the
        update-to-data ratio holds at sim speed."""
        cfg = self.config
        while cfg.max_lead_steps > 0 and not self.stop_event.is_set() and self.steps >= cfg.random_steps:
            link, learner = self.client.status(), self.client.learner_status()
            lead = learner.get("lead_steps", 0) + link.journal_seq - link.acked_seq
            if not link.connected or lead <= cfg.max_lead_steps or learner.get("done"):
                return
            time.sleep(0.005)

    def act(self, obs) -> np.ndarray:
        if self.steps < self.config.random_steps:
            return self.rng.uniform(-1.0, 1.0, self.env.action_space.shape).astype(np.float32)
        scale = self.config.noise_scale
        if scale == 1.0:
            return self.policy.act_normalized(obs, deterministic=False)
        mode = self.policy.act_normalized(obs, deterministic=True)
        if scale == 0.0:
            return mode
        sample = self.policy.act_normalized(obs, deterministic=False)
        return np.clip(mode + scale * (sample - mode), -1.0, 1.0).astype(np.float32)

    # -- the control loop ------------------------------------------------------------------------
    def _begin_episode(self) -> None:
        seed = self.config.seed * 1_000_003 + self.episodes
        self._obs, info = self.env.reset(seed=seed)
        getattr(getattr(self.robot, "teleop", None), "reset", lambda: None)()
        task = getattr(self.robot, "task", None)  # a practice session switches it between attempts
        if task is not None:
            self.task_name, self.instruction = task.name, task.instruction
        self.journal.begin_episode(source="online", task=self.task_name, instruction=self.instruction,
                                   operator="policy", robot=self.config.robot, reset_seed=seed,
                                   calibration_id=getattr(self.robot, "calibration_id", ""),
                                   reward_source=getattr(task, "reward_source", ""), reset=info.get("reset", ""))
        self._episode = {"steps": 0, "interventions": 0, "intervened_steps": 0, "was_intervened": False,
                         "reward_missed": 0}

    def step(self) -> bool:
        """One control tick: an env step with the policy (True), or holding still while there is none to act
        with (False). Sets `done` when the learner says so or an e-stop ends the episode."""
        if self.client is not None:
            self._refresh_policy()
            if self.learner_meta.get("done") or self.client.learner_status().get("done"):
                self.done = True
                return False
        why = self._why_hold()
        if why is not None:
            self._hold(why)
            return False
        if self._holding_since is not None:
            if self._reported_hold_s is not None:
                log.info("acting again after holding for %.0f s", time.monotonic() - self._holding_since)
            self._holding_since = None
        if self.client is not None:
            self._wait_for_learner()
        if self._obs is None:
            self._begin_episode()
        obs = self._obs
        action = self.act(obs)
        teleop = getattr(self.robot, "teleop", None)
        if hasattr(teleop, "observe"):  # a watching operator sees what the policy proposes
            teleop.observe(obs, action)
        next_obs, reward, terminated, truncated, info = self.env.step(action)
        self.journal.add_step(obs, info["executed_action"], reward, terminated, truncated, info=info)
        self._obs, self.steps = next_obs, self.steps + 1
        ep = self._episode
        intervened = bool(info["intervened"])
        ep["steps"] += 1
        ep["intervened_steps"] += intervened
        ep["interventions"] += intervened and not ep["was_intervened"]
        ep["was_intervened"] = intervened
        ep["reward_missed"] += bool(info.get("reward_missed", False))
        if terminated or truncated:
            self._end_episode(bool(info.get("success", False)), bool(info.get("estop", False)))
        if self._clock is not None:
            self._clock.wait(self.robot.period_s)
        return True

    def _end_episode(self, success: bool, estop: bool) -> None:
        ep = self._episode
        self.journal.end_episode(self._obs, success=success, reward_missed=ep["reward_missed"])
        log.info("episode %d: success %s, %d steps, %d interventions over %d steps%s", self.episodes, success,
                 ep["steps"], ep["interventions"], ep["intervened_steps"],
                 f", {ep['reward_missed']} reward labels missed" if ep["reward_missed"] else "")
        self.interventions += ep["interventions"]
        self.episodes, self.successes = self.episodes + 1, self.successes + success
        self._obs = None  # the next step resets
        if estop:
            log.warning("e-stop: %s; the actor stops", self.robot.estop.reason)
            self.done = True

    def run(self, max_steps: int | None = None) -> dict:
        """Step until the learner is done, an e-stop, `stop_event` or `max_steps` env steps."""
        if self._clock is not None:
            # The journal and link threads hold the GIL in short bursts; a short switch interval lets the
            # control loop take it back within a fraction of a millisecond when its period is up.
            sys.setswitchinterval(0.0005)
        while not (self.done or self.stop_event.is_set() or (max_steps is not None and self.steps >= max_steps)):
            self.step()
        return self.summary()

    def close(self, drain_s: float = 30.0) -> None:
        """Over the link: commit the journal and give the learner up to `drain_s` to acknowledge it; what is
        still unacknowledged then stays in the journal and goes with this actor's next run."""
        if self.client is None:
            return  # in process, the learner owns the store
        try:
            self.journal.flush()
            deadline = time.monotonic() + drain_s
            status = self.client.status()
            while (status.acked_seq < self.journal.committed_seq and not status.refused
                   and time.monotonic() < deadline):
                time.sleep(0.05)
                status = self.client.status()
            if status.acked_seq < self.journal.committed_seq:
                log.warning("%d journaled steps not yet acknowledged by the learner; they are sent on the next run",
                            self.journal.committed_seq - status.acked_seq)
        finally:
            self.client.close()
            self.journal.close()

    def summary(self) -> dict:
        remote = getattr(getattr(self.robot, "task", None), "remote", None)  # the learner's reward service
        return {"steps": self.steps, "episodes": self.episodes, "successes": self.successes,
                "interventions": self.interventions, "params_version": self.version,
                **(remote.summary() if remote is not None else {})}
