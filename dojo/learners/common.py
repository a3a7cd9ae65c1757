"""Plumbing every agent shares: image-encoder config fields, space handling, obs preprocessing, snapshots."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dojo.policies import networks as nets
from dojo.policies.snapshot import Snapshot, policy_apply
from dojo.policies.spaces import ActionScale, ObsAdapter, ObsSpec


@dataclasses.dataclass(frozen=True)
class EncoderFields:
    """Image-observation options (ignored for state-only obs). Defaults follow DrQ.

    The base of every agent's Config: constructing one checks all its values (`check_config`)."""

    encoder_channels: tuple[int, ...] = (32, 32, 32, 32)
    encoder_strides: tuple[int, ...] = (2, 2, 2, 1)
    encoder_feature_dim: int = 50
    aug_pad: int = 4  # DrQ random-shift padding in pixels; 0 turns augmentation off
    pretrained_encoder: str | None = None  # local file from networks.save_pretrained_trunk; frozen
    frame_stack: int = 1

    def __post_init__(self) -> None:
        check_config(self)


# What the agents' option names promise, checked for every agent alike (so a new agent gets the checks too).
_COUNTS = ("batch_size", "utd_ratio", "num_qs", "num_min_qs", "cql_n_actions", "flow_steps", "frame_stack",
           "encoder_feature_dim", "n_step")
_INTERVALS = {"discount": (0.0, 1.0, "in (0, 1]"), "tau": (0.0, 1.0, "in (0, 1]"),
              "demo_ratio": (None, 1.0, "in [0, 1]"), "expectile": (0.0, 0.999999, "in (0, 1)")}
_NON_NEGATIVE = ("aug_pad", "bc_weight", "bc_only_updates", "alpha", "cql_alpha", "awr_temperature", "lr_warmup_steps")
_POSITIVE = ("init_temperature", "cql_temp", "max_awr_weight", "reward_scale")
_OPTIONAL_NUMBERS = ("max_return",)  # None (off) or a finite number
_CHOICES = {"q_agg": ("mean", "min"), "bc_on": ("mode", "sample")}


def check_config(config) -> None:
    """Raise ValueError naming the option, its value and what was expected, for the first bad value."""
    name = getattr(config, "agent_name", type(config).__name__)
    for field in dataclasses.fields(config):
        key, value, default = field.name, getattr(config, field.name), field.default
        where = f"{name} option {key}"
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, tuple):
            ok = isinstance(value, tuple) and len(value) > 0 and all(_is_int(v) and v >= 1 for v in value)
            expected = "a non-empty list of positive integers"
        elif isinstance(default, int) and key not in _INTERVALS:
            ok, expected = _is_int(value), "an integer"
        elif isinstance(default, float) or key in _INTERVALS:
            ok, expected = _is_finite(value), "a finite number"
        elif key in _OPTIONAL_NUMBERS:
            ok, expected = value is None or _is_finite(value), "a finite number or null"
        elif isinstance(default, str) or default is None:
            ok, expected = value is None or isinstance(value, (str, int, float)), "a value"
        else:
            ok, expected = True, ""
        if ok and (key in _COUNTS and value < 1):
            ok, expected = False, "an integer >= 1"
        elif ok and key in _INTERVALS:
            low, high, expected = _INTERVALS[key]
            ok = (value >= 0 if low is None else value > low) and value <= high
        elif ok and (key.endswith("lr") or key in _POSITIVE):
            ok, expected = value > 0, "a number > 0"
        elif ok and key in _NON_NEGATIVE:
            ok, expected = value >= 0, "a number >= 0"
        elif ok and key in _CHOICES:
            ok, expected = value in _CHOICES[key], f"one of {_CHOICES[key]}"
        if not ok:
            raise ValueError(f"{where} must be {expected}, got {value!r}")
    if getattr(config, "num_min_qs", 1) > getattr(config, "num_qs", 1):
        raise ValueError(f"{name} option num_min_qs must be <= num_qs={config.num_qs}, got {config.num_min_qs}")
    if getattr(config, "bc_only_updates", 0) and not config.bc_weight > 0:
        raise ValueError(f"{name} option bc_only_updates={config.bc_only_updates} clones the demos with the BC term: "
                         f"it needs bc_weight > 0, got {config.bc_weight}")


def adam(lr: float, warmup_steps: int = 0):
    """Adam at `lr`, or with the rate rising linearly from 0 to `lr` over the first `warmup_steps` updates."""
    return optax.adam(optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else lr)


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def as_spec(obs_space) -> ObsSpec:
    if isinstance(obs_space, ObsSpec):
        return obs_space
    if isinstance(obs_space, gym.Space):
        return ObsAdapter(obs_space).spec
    raise TypeError(f"obs_space must be a gymnasium Box/Dict space or an ObsSpec, got {type(obs_space).__name__}")


def as_scale(action_space) -> ActionScale:
    return action_space if isinstance(action_space, ActionScale) else ActionScale.from_space(action_space)


def make_encoder(config: EncoderFields, spec: ObsSpec) -> nets.ObsEncoder:
    channels, strides = config.encoder_channels, config.encoder_strides
    if config.pretrained_encoder and spec.camera_keys:
        _, channels, strides = nets.load_pretrained_trunk(config.pretrained_encoder)
    return nets.ObsEncoder(camera_keys=spec.camera_keys, channels=tuple(channels), strides=tuple(strides),
                           feature_dim=config.encoder_feature_dim, frame_stack=config.frame_stack,
                           freeze_trunk=bool(config.pretrained_encoder))


def encoder_config(encoder: nets.ObsEncoder) -> dict:
    return {"camera_keys": tuple(encoder.camera_keys), "channels": tuple(encoder.channels),
            "strides": tuple(encoder.strides), "feature_dim": encoder.feature_dim,
            "frame_stack": encoder.frame_stack, "freeze_trunk": encoder.freeze_trunk}


def with_pretrained_trunk(params: dict, config: EncoderFields, spec: ObsSpec, path=("encoder",)) -> dict:
    """Overwrite every camera's conv trunk inside params[path...] with the pretrained file's weights."""
    if not (config.pretrained_encoder and spec.camera_keys):
        return params
    trunk, _, _ = nets.load_pretrained_trunk(config.pretrained_encoder)
    params = jax.tree_util.tree_map(lambda x: x, params)  # copy the dict structure
    node = params
    for key in path:
        node = node[key]
    for cam in spec.camera_keys:
        have = jax.tree_util.tree_map(jnp.shape, node[f"trunk_{cam}"])
        got = jax.tree_util.tree_map(jnp.shape, trunk)
        if have != got:
            raise ValueError(f"pretrained encoder {config.pretrained_encoder!r} has shapes {got}, camera "
                             f"{cam!r} needs {have} (frame_stack or channels differ?)")
        node[f"trunk_{cam}"] = jax.tree_util.tree_map(jnp.asarray, trunk)
    return params


def state_stats(spec: ObsSpec, obs_stats: dict | None):
    """(mean, std) of the state vector for normalisation; identity when no stats are given."""
    if obs_stats is None:
        return jnp.zeros(spec.state_dim, jnp.float32), jnp.ones(spec.state_dim, jnp.float32)
    mean = np.asarray(obs_stats["state_mean"], np.float32)
    std = np.maximum(np.asarray(obs_stats["state_std"], np.float32), 1e-3)
    if mean.shape != (spec.state_dim,) or std.shape != (spec.state_dim,):
        raise ValueError(f"obs_stats state_mean/state_std must have shape ({spec.state_dim},), "
                         f"got {mean.shape} and {std.shape}")
    return jnp.asarray(mean), jnp.asarray(std)


def preprocess(agent, rng, obs: dict, augment: bool) -> dict:
    """Normalise the state and (when training on images) apply DrQ random shifts."""
    obs = nets.normalize_state(obs, agent.state_mean, agent.state_std)
    if augment and agent.obs_spec.camera_keys and agent.config.aug_pad > 0:
        obs = nets.augment_obs(rng, obs, agent.obs_spec.camera_keys, agent.config.aug_pad)
    return obs


def check_batch(batch: dict, spec: ObsSpec, action_dim: int, multiple_of: int = 1) -> None:
    """Trace-time shape check of a sampled batch against the agent, with a message naming what is wrong."""
    for key in ("obs", "next_obs", "action", "reward", "discount"):
        if key not in batch:
            raise KeyError(f"batch lacks {key!r}; got keys {sorted(batch)}")
    b = batch["action"].shape[0]
    if batch["action"].shape[-1] != action_dim:
        raise ValueError(f"batch['action'] has {batch['action'].shape[-1]} dims, the agent expects {action_dim}")
    if b % multiple_of:
        raise ValueError(f"batch size {b} must be a multiple of utd_ratio={multiple_of}")
    if batch["obs"]["state"].shape[-1] != spec.state_dim:
        raise ValueError(f"batch['obs']['state'] has {batch['obs']['state'].shape[-1]} dims, the agent "
                         f"expects {spec.state_dim}")


def make_snapshot(agent, kind: str, encoder, actor, encoder_params, actor_params, actor_config: dict) -> Snapshot:
    return Snapshot(kind=kind, encoder_config=encoder_config(encoder), actor_config=actor_config,
                    params={"encoder": jax.tree_util.tree_map(np.asarray, encoder_params or {}),
                            "actor": jax.tree_util.tree_map(np.asarray, actor_params)},
                    obs_spec=agent.obs_spec, state_mean=np.asarray(agent.state_mean),
                    state_std=np.asarray(agent.state_std), action_scale=agent.action_scale,
                    step=int(agent.step))


def actor_fields(actor) -> dict:
    return {f.name: getattr(actor, f.name) for f in dataclasses.fields(actor)
            if f.name not in ("parent", "name")}


class GaussianActing:
    """Acting and snapshots for agents whose modules are (encoder, critic, _, actor) with a Gaussian actor on
    the encoder features kept in critic_params (SAC/RLPD, IQL)."""

    @jax.jit
    def sample_actions(self, obs, rng=None):
        """Actions in [-1, 1] for a batch of canonical obs: sampled with `rng`, the mode without."""
        encoder, _, _, actor = self.modules
        obs = preprocess(self, None, obs, augment=False)
        params = {"encoder": self.critic_params.get("encoder", {}), "actor": self.actor_params}
        return policy_apply("gaussian", encoder, actor, params, obs, rng, rng is None)

    def snapshot(self):
        encoder, _, _, actor = self.modules
        return make_snapshot(self, "gaussian", encoder, actor, self.critic_params.get("encoder"),
                             self.actor_params, actor_fields(actor))
