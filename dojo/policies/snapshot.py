"""The versioned inference snapshot (policy params + obs/action normalisation) and the `Policy` that runs it.

Needs only jax, flax and numpy: the robot machine loads snapshots without optax, torch or dojo.learners.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from dojo.fileio import atomic_write
from dojo.policies import networks as nets
from dojo.policies.spaces import STATE_KEY, ActionScale, ObsSpec

SNAPSHOT_VERSION = 1
POLICY_KINDS = ("gaussian", "flow_onestep")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything needed to act: architecture, params {"encoder", "actor"}, and the normalisation.

    kind "gaussian": actor is `networks.Actor` (mode or sample, tanh-squashed or clipped).
    kind "flow_onestep": actor is FQL's one-step `networks.FlowMLP` mu(features, z), z ~ N(0, I)
    (deterministic acting uses z = 0).
    """

    kind: str
    encoder_config: dict  # ObsEncoder fields
    actor_config: dict  # Actor or FlowMLP fields
    params: dict
    obs_spec: ObsSpec
    state_mean: np.ndarray
    state_std: np.ndarray
    action_scale: ActionScale
    step: int = 0
    version: int = SNAPSHOT_VERSION
    # Optional: the critic (`networks.CriticEnsemble` on this snapshot's encoder config; its params, encoder
    # included, in params["critic"]) that V-GPS steering scores candidate actions with, and the language
    # encoder ({"id", "dim"}) whose instruction embedding was appended to the state it was trained on.
    critic_config: dict | None = None  # CriticEnsemble fields: hidden_dims, num_qs, layer_norm
    language: dict | None = None

    def __post_init__(self):
        if self.kind not in POLICY_KINDS:
            raise ValueError(f"snapshot kind must be one of {POLICY_KINDS}, got {self.kind!r}")


def _to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def snapshot_bytes(snap: Snapshot) -> bytes:
    """The snapshot as msgpack bytes: what `save_snapshot` writes and the link carries."""
    blob = {
        "version": snap.version, "kind": snap.kind, "step": int(snap.step),
        "encoder_config": _jsonable(snap.encoder_config), "actor_config": _jsonable(snap.actor_config),
        "params": _to_numpy(flax.serialization.to_state_dict(snap.params)),
        "obs_spec": snap.obs_spec.to_dict(),
        "state_mean": np.asarray(snap.state_mean, np.float32), "state_std": np.asarray(snap.state_std, np.float32),
        "action_low": list(snap.action_scale.low), "action_high": list(snap.action_scale.high),
    }
    if snap.critic_config is not None:
        blob["critic_config"] = _jsonable(snap.critic_config)
    if snap.language is not None:
        blob["language"] = {"id": str(snap.language["id"]), "dim": int(snap.language["dim"])}
    return flax.serialization.msgpack_serialize(blob)


def save_snapshot(path: str, snap: Snapshot) -> None:
    """Write atomically (temp file, fsync, rename) as msgpack."""
    atomic_write(path, snapshot_bytes(snap))


def _jsonable(cfg: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _restore_config(cfg: dict) -> dict:
    # msgpack turns lists into {"0": .., "1": ..} dicts in flax's restore; put tuples back
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            v = tuple(v[str(i)] for i in range(len(v)))
        elif isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


def load_snapshot(path: str) -> Snapshot:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"policy snapshot {path!r} does not exist")
    with open(path, "rb") as f:
        return snapshot_from_bytes(f.read(), where=repr(path))


def snapshot_from_bytes(data: bytes, where: str = "received") -> Snapshot:
    try:
        blob = flax.serialization.msgpack_restore(data)
    except Exception as err:  # msgpack raises several types for damaged bytes
        raise ValueError(f"snapshot {where} is not a readable msgpack snapshot: {err}") from None
    if not isinstance(blob, dict) or blob.get("version") != SNAPSHOT_VERSION:
        version = blob.get("version") if isinstance(blob, dict) else None
        raise ValueError(f"snapshot {where} has version {version!r}, this dojo reads version {SNAPSHOT_VERSION}")
    spec = blob["obs_spec"]
    cams = spec["cameras"]
    cams = {k: tuple(int(x) for x in (s.values() if isinstance(s, dict) else s)) for k, s in cams.items()}
    low = blob["action_low"]
    high = blob["action_high"]
    low = tuple(float(x) for x in (low.values() if isinstance(low, dict) else low))
    high = tuple(float(x) for x in (high.values() if isinstance(high, dict) else high))
    return Snapshot(
        kind=blob["kind"], encoder_config=_restore_config(blob["encoder_config"]),
        actor_config=_restore_config(blob["actor_config"]), params=blob["params"],
        obs_spec=ObsSpec(int(spec["state_dim"]), tuple(cams.items())),
        state_mean=np.asarray(blob["state_mean"]), state_std=np.asarray(blob["state_std"]),
        action_scale=ActionScale(low, high), step=int(blob["step"]), version=int(blob["version"]),
        critic_config=_restore_config(blob["critic_config"]) if "critic_config" in blob else None,
        language={"id": str(blob["language"]["id"]), "dim": int(blob["language"]["dim"])} if "language" in blob
        else None)


def with_critic(snap: Snapshot, critic: nets.CriticEnsemble, critic_params, language: dict | None = None) -> Snapshot:
    """`snap` carrying `critic` (with its params) and the language encoder ({"id", "dim"}) its state was
    conditioned on: what a learner saves for V-GPS steering (dojo.policies.steering)."""
    config = {"hidden_dims": tuple(critic.hidden_dims), "num_qs": int(critic.num_qs),
              "layer_norm": bool(critic.layer_norm)}
    params = {**snap.params, "critic": _to_numpy(flax.serialization.to_state_dict(critic_params))}
    return dataclasses.replace(snap, params=params, critic_config=config, language=language)


def policy_apply(kind: str, encoder: nets.ObsEncoder, actor, params, obs, rng, deterministic: bool):
    """Actions in [-1, 1] for a batch of canonical (already normalised) obs; the one forward pass shared by
    agents' `sample_actions` and `Policy`."""
    features = encoder.apply({"params": params["encoder"]}, obs)
    if kind == "gaussian":
        mean, log_std = actor.apply({"params": params["actor"]}, features)
        if deterministic:
            return nets.mode(mean, actor.tanh_squash)
        action, _ = nets.sample_and_log_prob(rng, mean, log_std, actor.tanh_squash)
        return jnp.clip(action, -1.0, 1.0)
    z_shape = (features.shape[0], actor.action_dim)
    z = jnp.zeros(z_shape) if deterministic else jax.random.normal(rng, z_shape)
    return jnp.clip(actor.apply({"params": params["actor"]}, features, z), -1.0, 1.0)


def build_modules(kind: str, encoder_config: dict, actor_config: dict):
    encoder = nets.ObsEncoder(**encoder_config)
    actor = nets.Actor(**actor_config) if kind == "gaussian" else nets.FlowMLP(**actor_config)
    return encoder, actor


@functools.lru_cache(maxsize=16)
def _forward(kind: str, encoder_config: tuple, actor_config: tuple):
    """The jitted forward pass of one architecture, shared by every snapshot of it: an actor that swaps in a
    new snapshot every few seconds compiles once, not at each swap."""
    encoder, actor = build_modules(kind, dict(encoder_config), dict(actor_config))

    @functools.partial(jax.jit, static_argnums=5)
    def forward(params, mean, std, obs, rng, deterministic):
        obs = nets.normalize_state(obs, mean, std)
        return policy_apply(kind, encoder, actor, params, obs, rng, deterministic)
    return forward


class Policy:
    """Acts from a snapshot: canonical obs (one, or a batch) -> actions in the env's units."""

    def __init__(self, snapshot: Snapshot | str, seed: int = 0):
        self.snapshot = load_snapshot(snapshot) if isinstance(snapshot, str) else snapshot
        s = self.snapshot
        self._forward = _forward(s.kind, tuple(sorted(s.encoder_config.items())),
                                 tuple(sorted(s.actor_config.items())))
        self._rng = jax.random.PRNGKey(seed)
        self._params = jax.tree_util.tree_map(jnp.asarray, s.params)
        self._mean, self._std = jnp.asarray(s.state_mean), jnp.asarray(s.state_std)

    @property
    def action_scale(self) -> ActionScale:
        return self.snapshot.action_scale

    def act_normalized(self, obs: dict, deterministic: bool = True) -> np.ndarray:
        """Actions in [-1, 1]; obs may be one observation or a batch (leading axis)."""
        spec = self.snapshot.obs_spec
        missing = [k for k in (STATE_KEY, *spec.camera_keys) if k not in obs]
        if missing:
            raise KeyError(f"observation lacks keys {missing}; the snapshot expects "
                           f"{[STATE_KEY, *spec.camera_keys]}")
        single = np.ndim(obs[STATE_KEY]) == 1
        batch = {k: np.asarray(obs[k])[None] if single else np.asarray(obs[k]) for k in (STATE_KEY, *spec.camera_keys)}
        if batch[STATE_KEY].shape[-1] != spec.state_dim:
            raise ValueError(f"obs['state'] has {batch[STATE_KEY].shape[-1]} dims, the snapshot expects "
                             f"{spec.state_dim}")
        self._rng, key = jax.random.split(self._rng)
        action = np.asarray(self._forward(self._params, self._mean, self._std, batch, key, bool(deterministic)))
        return action[0] if single else action

    def __call__(self, obs: dict, deterministic: bool = True) -> np.ndarray:
        return self.action_scale.to_env(self.act_normalized(obs, deterministic))
