"""Turn any gymnasium Box/Dict observation space into dojo's canonical obs dict, and scale actions.

Canonical obs: {"state": float32 (D,), "<camera>": uint8 (H, W, 3) ...}. Agents and policies only ever
see canonical obs and actions in [-1, 1]^A; these helpers sit at the env boundary.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

STATE_KEY = "state"


def _is_image(space: gym.Space) -> bool:
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[-1] == 3)


@dataclasses.dataclass(frozen=True)
class ObsSpec:
    """Shapes of the canonical obs: state_dim (0 if none) and camera name -> (H, W, 3)."""

    state_dim: int
    cameras: tuple[tuple[str, tuple[int, int, int]], ...] = ()

    @property
    def camera_keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.cameras)

    def dummy(self, batch: int = 1, frame_stack: int = 1) -> dict[str, np.ndarray]:
        """A zero batch with the canonical structure (frame-stacked if frame_stack > 1)."""
        stack = (frame_stack,) if frame_stack > 1 else ()
        obs = {STATE_KEY: np.zeros((batch, *stack, self.state_dim), np.float32)}
        for key, shape in self.cameras:
            obs[key] = np.zeros((batch, *stack, *shape), np.uint8)
        return obs

    def to_dict(self) -> dict:
        return {"state_dim": self.state_dim, "cameras": {k: list(s) for k, s in self.cameras}}

    @classmethod
    def from_dict(cls, d: dict) -> "ObsSpec":
        return cls(int(d["state_dim"]), tuple((k, tuple(int(x) for x in s)) for k, s in d["cameras"].items()))


class ObsAdapter:
    """Maps raw env observations (Box or Dict space) to canonical obs dicts.

    A uint8 HxWx3 Box is a camera; every other Box is flattened into "state" (Dict keys in sorted order,
    with an existing "state" key first).
    """

    def __init__(self, space: gym.Space):
        if isinstance(space, gym.spaces.Dict):
            items = dict(space.spaces)
        elif isinstance(space, gym.spaces.Box):
            items = {"pixels" if _is_image(space) else STATE_KEY: space}
        else:
            raise ValueError(f"observation space must be a gymnasium Box or Dict, got {space!r}")
        self.camera_keys = tuple(sorted(k for k, s in items.items() if _is_image(s)))
        rest = sorted((k for k in items if k not in self.camera_keys), key=lambda k: (k != STATE_KEY, k))
        for k in rest:
            if not isinstance(items[k], gym.spaces.Box):
                raise ValueError(f"observation key {k!r} must be a Box (state) or uint8 HxWx3 Box (camera), "
                                 f"got {items[k]!r}")
        self.state_keys = tuple(rest)
        self.raw_is_dict = isinstance(space, gym.spaces.Dict)
        state_dim = int(sum(np.prod(items[k].shape, dtype=int) for k in rest))
        self.spec = ObsSpec(state_dim, tuple((k, tuple(items[k].shape)) for k in self.camera_keys))

    def __call__(self, obs) -> dict[str, np.ndarray]:
        """One raw observation (no batch axis) -> canonical dict."""
        items = obs if self.raw_is_dict else {(self.camera_keys or self.state_keys)[0]: obs}
        parts = [np.asarray(items[k], np.float32).reshape(-1) for k in self.state_keys]
        out = {STATE_KEY: np.concatenate(parts) if parts else np.zeros(0, np.float32)}
        for k in self.camera_keys:
            out[k] = np.asarray(items[k], np.uint8)
        return out


@dataclasses.dataclass(frozen=True)
class ActionScale:
    """Affine map between an env's Box action bounds and the agents' [-1, 1]^A."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def from_space(cls, space: gym.Space) -> "ActionScale":
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"action space must be a 1-D gymnasium Box, got {space!r}")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"action space bounds must be finite, got low={space.low} high={space.high}")
        return cls(tuple(float(x) for x in space.low), tuple(float(x) for x in space.high))

    @property
    def dim(self) -> int:
        return len(self.low)

    def to_env(self, action_norm: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
        a = np.clip(np.asarray(action_norm, np.float32), -1.0, 1.0)
        return low + (a + 1.0) * 0.5 * (high - low)

    def to_norm(self, action_env: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.low, np.float32), np.asarray(self.high, np.float32)
        return np.clip(2.0 * (np.asarray(action_env, np.float32) - low) / (high - low) - 1.0, -1.0, 1.0)


class CanonicalEnv(gym.Wrapper):
    """Any gymnasium env as dojo's actors, learners and evaluations see it: canonical obs dicts, actions in
    [-1, 1]^A, and in `info`: "success" from the env's own success key (gym-hil says "succeed",
    gymnasium-robotics "is_success"; absent when the env has none), "executed_action" (what was sent, unless
    the env reports its own, e.g. an operator's) and "intervened"."""

    def __init__(self, env: gym.Env, success_key: str = "success"):
        super().__init__(env)
        self.adapter = ObsAdapter(env.observation_space)
        self.scale = ActionScale.from_space(env.action_space)
        self.success_key = success_key
        spec = self.adapter.spec
        spaces = {STATE_KEY: gym.spaces.Box(-np.inf, np.inf, (spec.state_dim,), np.float32)}
        spaces.update({k: gym.spaces.Box(0, 255, shape, np.uint8) for k, shape in spec.cameras})
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.scale.dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self.adapter(obs), self._info(info)

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(self.scale.to_env(action))
        return self.adapter(obs), reward, terminated, truncated, self._info(info, action)

    def _info(self, info: dict, action: np.ndarray | None = None) -> dict:
        info = dict(info)
        if self.success_key in info:
            info["success"] = bool(info[self.success_key])
        info.setdefault("intervened", False)
        if action is not None:
            info.setdefault("executed_action", action)
        return info
