"""Reset-free practice (RoboFuME; SERL's forward/backward relocation): a forward and a backward task that undo each
other take turns on one scene, and a person resets the scene only when the session asks.

`PracticeSession` wraps a RobotEnv whose task can switch direction (`begin_attempt(direction)` keeps the scene,
`set_direction(direction)` makes the next reset a full one; the twin's task pair, dojo.sim.task_pair). Each
`reset()` starts the next attempt:
- a success turns the direction round; so does a failure (`after_failure="turn"`): the other direction takes the
  scene over from where the failure left it, as the backward policy of forward/backward practice does, unless its
  goal already holds there (the failure left the scene as it began) or the task cannot tell; then, and with
  `after_failure="retry"`, the same direction tries again (a policy acting with its mode repeats its failure);
- after `max_failures` failed attempts in a row, or when the task's stuck detector (`stuck_reason()`) fires, a
  person is asked to reset the scene for the next attempt (dojo.robot.tasks.HumanReset: the arm goes home, the
  person says when they are done; the twin's SimPerson after its delay);
- a process's first attempt starts from the env's own reset (the twin re-places the cube: its scene did not
  outlive the process).

The observation's "state" gains the direction as a one-hot (forward, backward), so one agent learns both.
Every attempt is an episode; `info["reset"]` says how it began ("", "free" or "human", stored as meta/reset).
The session keeps no state of its own on disk: `resume(episodes)` rebuilds the attempt counter, the direction,
the failure streak and the human resets from the episodes the actor already journaled, so a SIGKILLed actor
resumes where it was with nothing counted twice.
"""

from __future__ import annotations

import dataclasses
import logging

import gymnasium as gym
import numpy as np

from dojo.robot.tasks import HumanReset

log = logging.getLogger("dojo.practice")

DIRECTIONS = ("forward", "backward")
OPPOSITE = {"forward": "backward", "backward": "forward"}
AFTER_FAILURE = ("turn", "retry")


@dataclasses.dataclass(frozen=True)
class PracticeConfig:
    max_failures: int = 5  # failed attempts in a row before a person resets the scene
    reset_timeout_s: float = 600.0  # wait this long for the person, then stop with the arm at home
    after_failure: str = "turn"  # turn: the other direction goes next (unless its goal already holds); retry

    def __post_init__(self) -> None:
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 1:
            raise ValueError(f"practice.max_failures must be an integer >= 1, got {self.max_failures!r}")
        if not self.reset_timeout_s > 0:
            raise ValueError(f"practice.reset_timeout_s must be > 0, got {self.reset_timeout_s!r}")
        if self.after_failure not in AFTER_FAILURE:
            raise ValueError(f"practice.after_failure must be one of {AFTER_FAILURE}, got {self.after_failure!r}")


def pair_task(task):
    """The task that switches direction: the env's own, or the scene under a station's task (a reward model
    that judges the twin's pair)."""
    for candidate in (task, getattr(task, "scene", None)):
        if candidate is not None and hasattr(candidate, "begin_attempt"):
            return candidate
    raise ValueError(f"task {getattr(task, 'name', task)!r} has no forward/backward directions to practise "
                     "(a reset-free task pair, e.g. the twin's cube_pads)")


def session_space(space: gym.spaces.Dict) -> gym.spaces.Dict:
    """The observation space of a session over an env with `space`: the direction's one-hot ends the state."""
    state = space["state"]
    return gym.spaces.Dict({**space.spaces, "state": gym.spaces.Box(
        -np.inf, np.inf, (state.shape[0] + len(DIRECTIONS),), np.float32)})


class PracticeSession(gym.Wrapper):
    """`env` is a RobotEnv (before CanonicalEnv); `person` answers reset requests (request(rng) / ready())."""

    def __init__(self, env, person, config: PracticeConfig = PracticeConfig()) -> None:
        super().__init__(env)
        self.config, self.person = config, person
        self.pair = pair_task(env.task)
        self.names = {d: self.pair.direction_names[d] for d in DIRECTIONS}
        self.observation_space = session_space(env.observation_space)
        self._scene_reset, self._human_reset = env.reset_fn, HumanReset(person, config.reset_timeout_s)
        env.reset_fn = self._reset_scene
        self._planned = ""
        self.fresh_scenes = False  # every attempt from a set-up scene, as a person sets it up between demos
        self.resume([])

    # -- the session's state, from the journaled attempts ------------------------------------------
    def resume(self, episodes) -> None:
        """Take the session up after `episodes` (EpisodeInfo of this actor's journal, oldest first): attempts are
        its finished episodes of the pair's tasks; one cut short by a crash is attempted again."""
        direction_of = {name: d for d, name in self.names.items()}
        done = [e for e in episodes if e.finished and e.task in direction_of]
        self.attempts = len(done)
        self.successes = {d: sum(e.success for e in done if direction_of[e.task] == d) for d in DIRECTIONS}
        self.human_resets = sum(e.reset == "human" for e in done)
        self.failures = 0
        for e in reversed(done):
            if e.success:
                break
            self.failures += 1
            if e.reset != "free":  # the streak began with a fresh scene
                break
        last = done[-1] if done else None
        self.direction = "forward" if last is None else (
            OPPOSITE[direction_of[last.task]] if last.success else direction_of[last.task])
        self._scene_live = False  # this process has not set the scene up yet
        self.pair.set_direction(self.direction)

    def next_reset(self) -> tuple[str, str]:
        """(how the next attempt begins: "", "free" or "human"; why a person is asked, or "")."""
        if not self._scene_live or self.fresh_scenes:
            return "", ""
        stuck = getattr(self.pair, "stuck_reason", lambda: None)()
        if stuck:
            return "human", stuck
        if self.failures >= self.config.max_failures:
            return "human", f"{self.failures} failed attempts in a row"
        return "free", ""

    # -- gymnasium ---------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        kind, why = self.next_reset()
        if kind == "free":
            if self._turn_after_failure():
                self.direction = OPPOSITE[self.direction]
            self.pair.begin_attempt(self.direction)
        else:
            self.pair.set_direction(self.direction)
            self.failures = 0
        if kind == "human":
            log.warning("asking for a human reset (%s): set the scene up for %s", why, self.pair.instruction)
        self._planned = kind
        task = self.env.task
        if task is not self.pair:  # a station's task over the pair's scene: its episodes carry the direction's name
            task.name, task.instruction = self.pair.name, self.pair.instruction
        obs, info = self.env.reset(seed=seed, options=options)
        self._scene_live = True
        self.human_resets += kind == "human"
        return self._observe(obs), {**info, "reset": kind, "direction": self.direction, "why_reset": why}

    def _turn_after_failure(self) -> bool:
        """After a failed attempt the other direction goes next, from where the scene is, unless its goal already
        holds (the failure left the scene as it began) or the pair cannot tell (then the direction is retried)."""
        if not self.failures or self.config.after_failure != "turn":  # the last attempt succeeded, or retry
            return False
        goal_met = getattr(self.pair, "goal_met", None)
        return goal_met is not None and goal_met(OPPOSITE[self.direction]) is False

    def _reset_scene(self, env, rng: np.random.Generator) -> None:
        """The RobotEnv's reset: a person's on request, else the env's own (which keeps a begun attempt's scene)."""
        (self._human_reset if self._planned == "human" else self._scene_reset)(env, rng)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            success = bool(info.get("success", False))
            self.attempts += 1
            self.successes[self.direction] += success
            self.failures = 0 if success else self.failures + 1
            if success:
                self.direction = OPPOSITE[self.direction]
        return self._observe(obs), reward, terminated, truncated, {**info, "direction": self.pair.direction}

    def _observe(self, obs: dict) -> dict:
        onehot = np.array([self.pair.direction == d for d in DIRECTIONS], np.float32)
        return {**obs, "state": np.concatenate([obs["state"], onehot]).astype(np.float32)}

    def summary(self) -> dict:
        return {"attempts": self.attempts, "human_resets": self.human_resets,
                **{f"{d}_successes": n for d, n in self.successes.items()}}
