"""Network pieces shared by every agent and by inference: MLPs, vmapped critic ensembles, actors,
per-camera conv encoders with DrQ random shifts, and a frozen pretrained conv trunk loaded from a file.
"""

from __future__ import annotations

import os
from typing import Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from dojo.fileio import atomic_write
from dojo.policies.spaces import STATE_KEY

default_init = nn.initializers.xavier_uniform


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    activate_final: bool = False
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x):
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(size, kernel_init=default_init())(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
                x = nn.relu(x)
        return x


def ensemble(module_cls, num: int):
    """`num` independent copies of `module_cls` evaluated in one vmapped call; outputs get a leading axis."""
    return nn.vmap(module_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=None, out_axes=0, axis_size=num)


class ConvTrunk(nn.Module):
    """DrQ-style conv stack on one camera: uint8 (B, H, W, C) -> flat features."""

    channels: Sequence[int] = (32, 32, 32, 32)
    strides: Sequence[int] = (2, 2, 2, 1)

    @nn.compact
    def __call__(self, image):
        x = image.astype(jnp.float32) / 255.0 - 0.5
        for ch, stride in zip(self.channels, self.strides):
            x = nn.relu(nn.Conv(ch, (3, 3), strides=(stride, stride), padding="VALID",
                                kernel_init=nn.initializers.orthogonal(np.sqrt(2)))(x))
        return x.reshape(x.shape[0], -1)


def flatten_stack(obs: dict, frame_stack: int) -> dict:
    """Fold a frame-stack axis (B, S, ...) into features: state -> (B, S*D), images -> (B, H, W, S*3)."""
    if frame_stack == 1:
        return obs
    out = {}
    for k, v in obs.items():
        if k == STATE_KEY:
            out[k] = v.reshape(v.shape[0], -1)
        else:
            b, s, h, w, c = v.shape
            out[k] = jnp.moveaxis(v, 1, 3).reshape(b, h, w, s * c)
    return out


class ObsEncoder(nn.Module):
    """Canonical obs -> one feature vector: per camera a ConvTrunk + Dense + LayerNorm + tanh, then the
    proprioceptive state concatenated. With no cameras it passes the state through (no parameters)."""

    camera_keys: Sequence[str] = ()
    channels: Sequence[int] = (32, 32, 32, 32)
    strides: Sequence[int] = (2, 2, 2, 1)
    feature_dim: int = 50
    frame_stack: int = 1
    freeze_trunk: bool = False  # a pretrained trunk: its output gets no gradient

    @nn.compact
    def __call__(self, obs):
        obs = flatten_stack(obs, self.frame_stack)
        parts = []
        for key in self.camera_keys:
            x = ConvTrunk(self.channels, self.strides, name=f"trunk_{key}")(obs[key])
            if self.freeze_trunk:
                x = jax.lax.stop_gradient(x)
            x = nn.Dense(self.feature_dim, kernel_init=default_init(), name=f"proj_{key}")(x)
            parts.append(jnp.tanh(nn.LayerNorm(name=f"ln_{key}")(x)))
        parts.append(obs[STATE_KEY].astype(jnp.float32))
        return jnp.concatenate(parts, axis=-1)


class QHead(nn.Module):
    hidden_dims: Sequence[int]
    layer_norm: bool

    @nn.compact
    def __call__(self, features, action):
        x = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm)(
            jnp.concatenate([features, action], -1))
        return nn.Dense(1, kernel_init=default_init())(x)[..., 0]


class VHead(nn.Module):
    hidden_dims: Sequence[int]
    layer_norm: bool

    @nn.compact
    def __call__(self, features):
        x = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm)(features)
        return nn.Dense(1, kernel_init=default_init())(x)[..., 0]


class CriticEnsemble(nn.Module):
    """E Q-functions on a shared ObsEncoder (the encoder the actor reuses, detached). Output (E, B)."""

    encoder: ObsEncoder
    hidden_dims: Sequence[int] = (256, 256)
    num_qs: int = 2
    layer_norm: bool = True

    def setup(self):
        self.heads = ensemble(QHead, self.num_qs)(self.hidden_dims, self.layer_norm)

    def __call__(self, obs, action):
        return self.heads(self.encoder(obs), action)

    def encode(self, obs):
        return self.encoder(obs)

    def from_features(self, features, action):
        return self.heads(features, action)


class Actor(nn.Module):
    """Gaussian policy head on features: returns (mean, log_std). With tanh_squash the action is
    tanh(u), u ~ N(mean, std) (SAC); without, N(mean, std) clipped at act time (BC, IQL)."""

    action_dim: int
    hidden_dims: Sequence[int] = (256, 256)
    layer_norm: bool = False
    tanh_squash: bool = True
    state_dependent_std: bool = True
    const_std: bool = False
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, features):
        x = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm)(features)
        mean = nn.Dense(self.action_dim, kernel_init=default_init())(x)
        if self.const_std:
            log_std = jnp.zeros_like(mean)
        elif self.state_dependent_std:
            log_std = nn.Dense(self.action_dim, kernel_init=default_init())(x)
        else:
            log_std = jnp.broadcast_to(self.param("log_std", nn.initializers.zeros, (self.action_dim,)), mean.shape)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class FlowMLP(nn.Module):
    """FQL's networks: a velocity field v(features, x_t, t) (with t) or a one-step policy mu(features, z)."""

    action_dim: int
    hidden_dims: Sequence[int] = (512, 512, 512, 512)
    layer_norm: bool = False

    @nn.compact
    def __call__(self, features, x, t=None):
        inputs = [features, x] if t is None else [features, x, t]
        h = MLP(self.hidden_dims, activate_final=True, layer_norm=self.layer_norm)(jnp.concatenate(inputs, -1))
        return nn.Dense(self.action_dim, kernel_init=default_init())(h)


# --- distributions (no distrax: the few formulas we need) ---------------------------------------------

_LOG_2PI = float(np.log(2 * np.pi))


def gaussian_log_prob(mean, log_std, x):
    return jnp.sum(-0.5 * ((x - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * _LOG_2PI, axis=-1)


def _tanh_log_det(u):
    # log(1 - tanh(u)^2), written stably
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def sample_and_log_prob(rng, mean, log_std, tanh_squash: bool):
    """Reparameterised sample and its log density (of the squashed action when tanh_squash)."""
    u = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
    logp = gaussian_log_prob(mean, log_std, u)
    if tanh_squash:
        return jnp.tanh(u), logp - jnp.sum(_tanh_log_det(u), -1)
    return u, logp


def log_prob(mean, log_std, action, tanh_squash: bool):
    """Log density of given actions; squashed actions at exactly +-1 are pulled just inside."""
    if tanh_squash:
        u = jnp.arctanh(jnp.clip(action, -1 + 1e-6, 1 - 1e-6))
        return gaussian_log_prob(mean, log_std, u) - jnp.sum(_tanh_log_det(u), -1)
    return gaussian_log_prob(mean, log_std, action)


def mode(mean, tanh_squash: bool):
    return jnp.tanh(mean) if tanh_squash else jnp.clip(mean, -1.0, 1.0)


# --- augmentation and target updates -----------------------------------------------------------------

def random_shift(rng, images, pad: int = 4):
    """DrQ augmentation: pad by `pad` pixels (edge) and crop back at a random offset per image.

    images: uint8 (B, H, W, C). Works on any leading batch size; same shift for all channels of a sample.
    """
    b, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    offsets = jax.random.randint(rng, (b, 2), 0, 2 * pad + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def augment_obs(rng, obs: dict, camera_keys: Sequence[str], pad: int):
    """Random-shift every camera in a (possibly frame-stacked) obs dict; state is untouched."""
    out = dict(obs)
    for key, k in zip(camera_keys, jax.random.split(rng, max(len(camera_keys), 1))):
        x = obs[key]
        if x.ndim == 5:  # (B, S, H, W, 3): one shift for the whole stack
            b, s, h, w, c = x.shape
            x = jnp.moveaxis(x, 1, 3).reshape(b, h, w, s * c)
            out[key] = jnp.moveaxis(random_shift(k, x, pad).reshape(b, h, w, s, c), 3, 1)
        else:
            out[key] = random_shift(k, x, pad)
    return out


def soft_update(target, online, tau: float):
    return jax.tree_util.tree_map(lambda t, o: (1 - tau) * t + tau * o, target, online)


# --- pretrained conv trunks in local files -----------------------------------------------------------

def save_pretrained_trunk(path: str, params, channels: Sequence[int], strides: Sequence[int]) -> None:
    """Write a ConvTrunk's params and architecture (msgpack, no pickle) for `load_pretrained_trunk`."""
    blob = {"channels": list(channels), "strides": list(strides),
            "params": jax.tree_util.tree_map(np.asarray, flax.serialization.to_state_dict(params))}
    atomic_write(path, flax.serialization.msgpack_serialize(blob))


def load_pretrained_trunk(path: str) -> tuple[dict, tuple[int, ...], tuple[int, ...]]:
    """Read (params, channels, strides) written by `save_pretrained_trunk`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained encoder file {path!r} does not exist")
    with open(path, "rb") as f:
        blob = flax.serialization.msgpack_restore(f.read())
    return blob["params"], tuple(int(c) for c in blob["channels"]), tuple(int(s) for s in blob["strides"])


def normalize_state(obs: dict, mean, std) -> dict:
    """(state - mean) / std on the last axis; cameras pass through."""
    out = dict(obs)
    out[STATE_KEY] = (obs[STATE_KEY].astype(jnp.float32) - mean) / std
    return out
