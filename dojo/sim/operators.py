"""Simulated human operators behind `Teleop`: a sloppy scripted operator and one that intervenes on a policy.

Both act through `TeleopCommand`s that RobotEnv's teleop override turns back into the scripted expert's
action exactly (`env.teleop_to_action(cmd)`), so the twin can stand in for a person at every place a
SpaceMouse would be plugged in (`make_teleop("sim-operator", env=env, ...)`).

Protocol for an operator that watches a policy (the practice loop does this each step)::

    action = policy(obs)
    operator.observe(obs, action)       # what the policy proposes, before the step
    obs, r, term, trunc, info = env.step(action)   # env reads operator; info["intervened"] if it took over
    ...
    operator.reset()                    # at each env.reset: clears the detector and episode counts
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import numpy as np

from dojo.robot.env import RobotEnv
from dojo.robot.interfaces import Teleop, TeleopCommand
from dojo.sim.experts import make_expert, twin_task

RULES = ("deviation", "value")
BUTTONS = ("success", "fail", "rerecord", "discard", "estop")


def action_to_command(env: RobotEnv, action: np.ndarray, intervene: bool = True) -> TeleopCommand:
    """A TeleopCommand that `env.teleop_to_action` maps back to `action` exactly (same frame, same dims)."""
    action = np.asarray(action, dtype=np.float64)
    twist = np.zeros(6)
    twist[:3] = action[:3]
    if env.config.action_dim == 7:
        twist[3:] = action[3:6]
    return TeleopCommand(twist=twist, gripper=float(action[-1]), intervene=intervene, frame=env.config.action_frame)


def oracle_progress(env: RobotEnv) -> float:
    """A privileged state value in [0, 1]: the task's shaped progress, 1 once it has succeeded."""
    state, task = env.arm.state(), twin_task(env)
    return 1.0 if task.success(state) else float(task.dense(state))


class ScriptedOperator(Teleop):
    """The task's scripted expert as an operator with imperfect skill; it always has control (intervene=True).

    Each step it starts a lapse with probability 1 - `skill`: for `lapse_steps` steps it holds one wrong,
    random action (gripper included, so it may drop what it holds). Gaussian `noise_std` (action units)
    is added to every good action. `aim_offset_m` (x, y, z in m, base frame) is a systematic misjudgement
    of where the target is (see `dojo.sim.experts`): unlike zero-mean noise it does not average out when
    the operator is cloned. On pick_cube with 100-step episodes, about 50% success comes from skill=0.75
    with lapse_steps=5, from aim_offset_m=(0.036, 0, 0) (aiming beside the cube) or from (0, 0, 0.0165)
    (grasping too high; see tests/test_operators.py); skill=1, noise_std=0, no offset is the expert.
    `buttons` scripts a person's button presses: {(episode, step): "success" | "fail" | "rerecord" |
    "discard" | "estop"}, episodes counted by `reset()` calls from 0 and steps by `read()` calls in it.
    """

    def __init__(self, env: RobotEnv, skill: float = 1.0, noise_std: float = 0.0, lapse_steps: int = 5,
                 seed: int | None = None, buttons: dict[tuple[int, int], str] | None = None,
                 aim_offset_m=(0.0, 0.0, 0.0)) -> None:
        if not 0.0 <= skill <= 1.0:
            raise ValueError(f"skill must be a probability in [0, 1], got {skill!r}")
        if not (np.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be >= 0 (action units), got {noise_std!r}")
        if not (isinstance(lapse_steps, int) and lapse_steps >= 1):
            raise ValueError(f"lapse_steps must be a positive integer, got {lapse_steps!r}")
        self.env = getattr(env, "unwrapped", env)
        self.expert = make_expert(self.env, aim_offset_m)
        self.skill, self.noise_std, self.lapse_steps = float(skill), float(noise_std), lapse_steps
        self.rng = np.random.default_rng(seed)
        self._lapse_left, self._lapse_action = 0, None
        self.buttons = dict(buttons or {})
        for key, button in self.buttons.items():
            if button not in BUTTONS:
                raise ValueError(f"scripted button at {key} must be one of {BUTTONS}, got {button!r}")
        self._episode, self._step = -1, 0

    def action(self) -> np.ndarray:
        """What this operator does now, in the env's action space."""
        expert = self.expert()
        if self._lapse_left == 0 and self.rng.random() >= self.skill:
            self._lapse_left = self.lapse_steps
            self._lapse_action = self.rng.uniform(-1.0, 1.0, size=expert.shape)
        if self._lapse_left > 0:
            self._lapse_left -= 1
            return self._lapse_action.astype(np.float32)
        if self.noise_std > 0:
            expert = expert + self.rng.normal(0.0, self.noise_std, size=expert.shape)
        return np.clip(expert, -1.0, 1.0).astype(np.float32)

    def read(self) -> TeleopCommand:
        cmd = action_to_command(self.env, self.action())
        button = self.buttons.get((self._episode, self._step))
        self._step += 1
        return dataclasses.replace(cmd, **{button: True}) if button else cmd

    def reset(self) -> None:
        self._lapse_left = 0
        self._episode, self._step = self._episode + 1, 0


class InterveningOperator(Teleop):
    """Watches the policy and takes over for `takeover_steps` steps when it goes wrong, then hands back.

    rule "deviation": the proposed action is off the expert's by more than `threshold` (RMS over action
    dimensions, in [-1, 1] action units) for `patience_steps` steps in a row. rule "value" (RLIF's
    value-based rule with an oracle critic): the critic's state value (default `oracle_progress`) has not
    risen by `threshold` over the last `patience_steps` steps. RLIF compares values of the policy's and
    the expert's actions; we judge the states the policy reaches, which a privileged progress measure
    gives directly. While in control it acts as a `ScriptedOperator` with the given skill and noise, so
    its own success rate is set by those and its `aim_offset_m` (about 50%: skill=0.75 on pick_cube).
    The deviation rule compares with the operator's own idea of the right action (its offset included).
    """

    def __init__(self, env: RobotEnv, rule: str = "deviation", threshold: float | None = None,
                 patience_steps: int = 3, takeover_steps: int = 10, skill: float = 1.0, noise_std: float = 0.0,
                 lapse_steps: int = 5, critic: Callable[[RobotEnv], float] | None = None,
                 seed: int | None = None, aim_offset_m=(0.0, 0.0, 0.0)) -> None:
        if rule not in RULES:
            raise ValueError(f"intervention rule must be one of {RULES}, got {rule!r}")
        threshold = (0.5 if rule == "deviation" else 0.005) if threshold is None else threshold
        if not (np.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
        for name, value in (("patience_steps", patience_steps), ("takeover_steps", takeover_steps)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.operator = ScriptedOperator(env, skill, noise_std, lapse_steps, seed, aim_offset_m=aim_offset_m)
        self.env = self.operator.env
        self.rule, self.threshold = rule, float(threshold)
        self.patience_steps, self.takeover_steps = patience_steps, takeover_steps
        self.critic = critic or oracle_progress
        self.interventions = 0  # takeovers this episode
        self.intervened_steps = 0  # steps in control this episode
        self.reset()

    def observe(self, obs, proposed_action) -> None:
        """The policy's proposed action for the coming step (call before `env.step`)."""
        action = np.asarray(proposed_action, dtype=np.float64).reshape(-1)
        if action.shape != self.env.action_space.shape:
            raise ValueError(f"proposed action must have shape {self.env.action_space.shape}, got {action.shape}")
        self._proposed = action

    def read(self) -> TeleopCommand:
        if self._control_left == 0 and self._goes_wrong():
            self._control_left = self.takeover_steps
            self.interventions += 1
        if self._control_left > 0:
            self._control_left -= 1
            self.intervened_steps += 1
            if self._control_left == 0:
                self._history.clear()  # judge the policy afresh once it has control again
            return self.operator.read()
        return TeleopCommand(twist=np.zeros(6), gripper=0.0, intervene=False, frame=self.env.config.action_frame)

    @property
    def in_control(self) -> bool:
        return self._control_left > 0

    def reset(self) -> None:
        """Start of an episode: forget the policy's history, hand control back, zero the counts."""
        self._proposed: np.ndarray | None = None
        self._history: list[float] = []
        self._control_left = 0
        self.interventions = self.intervened_steps = 0
        self.operator.reset()

    def _goes_wrong(self) -> bool:
        if self.rule == "deviation":
            if self._proposed is None:
                return False  # nothing proposed (observe not called): nothing to judge
            gap = float(np.sqrt(np.mean((self._proposed - self.operator.expert()) ** 2)))
            self._proposed = None
            self._history.append(gap)
            recent = self._history[-self.patience_steps:]
            return len(recent) == self.patience_steps and min(recent) > self.threshold
        self._history.append(self.critic(self.env))
        if len(self._history) <= self.patience_steps:
            return False
        return self._history[-1] - self._history[-1 - self.patience_steps] < self.threshold


def make_operator(env: RobotEnv, mode: str = "scripted", **config) -> Teleop:
    """`mode` "scripted" -> ScriptedOperator, "intervening" -> InterveningOperator; `config` their arguments."""
    classes = {"scripted": ScriptedOperator, "intervening": InterveningOperator}
    if mode not in classes:
        raise ValueError(f"sim operator mode must be 'scripted' or 'intervening', got {mode!r}")
    accepted = set(inspect.signature(classes[mode].__init__).parameters) - {"self", "env"}
    unknown = set(config) - accepted
    if unknown:
        raise ValueError(f"unknown {mode} sim operator option(s) {sorted(unknown)}; "
                         f"expected some of {sorted(accepted)}")
    return classes[mode](env, **config)


def run_episodes(env: RobotEnv, operator: Teleop, episodes: int, seed: int = 0,
                 policy: Callable[[dict], np.ndarray] | None = None) -> dict:
    """Run `episodes` with `operator` attached to `env` (alone, or watching `policy`); success and intervention counts.

    Without a policy the operator must be in control on its own (a ScriptedOperator); with one, the
    policy acts and an InterveningOperator may take over.
    """
    env = getattr(env, "unwrapped", env)
    saved, env.teleop = env.teleop, operator
    successes, interventions, intervened_steps = 0, 0, 0
    try:
        for episode in range(episodes):
            obs, info = env.reset(seed=seed + episode)
            getattr(operator, "reset", lambda: None)()
            done = False
            while not done:
                action = policy(obs) if policy is not None else np.zeros(env.action_space.shape, np.float32)
                if hasattr(operator, "observe"):
                    operator.observe(obs, action)
                obs, _, terminated, truncated, info = env.step(action)
                intervened_steps += bool(info["intervened"])
                done = terminated or truncated
            successes += bool(info["success"])
            interventions += getattr(operator, "interventions", 0)
    finally:
        env.teleop = saved
    return {"episodes": episodes, "success_rate": successes / episodes, "interventions": interventions,
            "intervened_steps": intervened_steps}
