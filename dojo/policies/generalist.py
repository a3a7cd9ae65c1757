"""Generalist policies that V-GPS steers: one interface that samples K candidate action chunks for (observation,
instruction), dojo's own language-conditioned flow-matching generalist, and an adapter for any policy served over
the openpi websocket protocol (pi0, pi0.5, a LeRobot checkpoint, dojo's own served generalist).

Candidates come back in the policy's own normalised action space (what its critic-free execution would see);
`unnormalize` maps them to the env's canonical [-1, 1]^d with the policy's `action_stats`, expressed in those
canonical units: {"mean": (d,), "std": (d,)} (a = mean + std * a_norm, as Octo normalises) or
{"low": (d,), "high": (d,)} (a = low + (a_norm + 1) / 2 * (high - low)).

Only numpy, jax and flax are needed to act. The language encoder (torch) is loaded only when an instruction the
generalist file has no embedding for must be embedded, and training imports optax (train_generalist).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Callable, Mapping, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from dojo.fileio import atomic_write
from dojo.policies import networks as nets
from dojo.policies.spaces import STATE_KEY, ObsSpec

GENERALIST_VERSION = 1
GENERALIST_KIND = "dojo-flow-generalist"
# Floors for the normalisers: a feature that hardly varies in the training data must not blow up at run time.
_STATE_STD_FLOOR = 1e-2
_LANG_STD_FLOOR = 1e-2
_ACTION_STD_FLOOR = 1e-2


# --- action statistics: the policy's normalisation, in the env's canonical units ---


def check_action_stats(stats: Mapping, action_dim: int | None = None) -> dict[str, np.ndarray]:
    """`stats` as float32 arrays, checked: either {"mean", "std" > 0} or {"low" < "high"}, each of shape (d,)."""
    if not isinstance(stats, Mapping):
        raise ValueError(f"action_stats must be a dict with 'mean'/'std' or 'low'/'high', got {type(stats).__name__}")
    keys = ("mean", "std") if "mean" in stats or "std" in stats else ("low", "high")
    if not all(k in stats for k in keys):
        raise ValueError(f"action_stats must hold 'mean' and 'std', or 'low' and 'high'; got keys {sorted(stats)}")
    out = {k: np.asarray(stats[k], np.float32).reshape(-1) for k in keys}
    d = out[keys[0]].size if action_dim is None else action_dim
    for k, v in out.items():
        if v.shape != (d,) or not np.all(np.isfinite(v)):
            raise ValueError(f"action_stats[{k!r}] must be {d} finite numbers, got {stats[k]!r}")
    if keys == ("mean", "std") and not np.all(out["std"] > 0):
        raise ValueError(f"action_stats['std'] must be > 0, got {out['std']}")
    if keys == ("low", "high") and not np.all(out["low"] < out["high"]):
        raise ValueError(f"action_stats['low'] must be < 'high', got {out['low']} and {out['high']}")
    return out


def unnormalize_actions(actions: np.ndarray, stats: Mapping) -> np.ndarray:
    """Policy-normalised actions (..., d) -> the env's canonical actions, clipped to [-1, 1]."""
    a = np.asarray(actions, np.float32)
    s = check_action_stats(stats, a.shape[-1])
    out = s["mean"] + s["std"] * a if "mean" in s else s["low"] + (a + 1.0) * 0.5 * (s["high"] - s["low"])
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def normalize_actions(actions: np.ndarray, stats: Mapping) -> np.ndarray:
    """The env's canonical actions (..., d) -> the policy's normalised space (the inverse of unnormalize_actions
    inside [-1, 1])."""
    a = np.asarray(actions, np.float32)
    s = check_action_stats(stats, a.shape[-1])
    if "mean" in s:
        return ((a - s["mean"]) / s["std"]).astype(np.float32)
    return (2.0 * (a - s["low"]) / (s["high"] - s["low"]) - 1.0).astype(np.float32)


class Generalist:
    """The interface V-GPS steers. `sample(obs, instruction, k)` -> (k, chunk_len, action_dim) candidate chunks
    in the policy's own normalised space; `unnormalize(actions)` -> the env's canonical [-1, 1]^d."""

    chunk_len: int
    action_dim: int
    action_stats: dict

    def sample(self, obs: dict[str, np.ndarray], instruction: str, k: int) -> np.ndarray:
        raise NotImplementedError

    def unnormalize(self, actions: np.ndarray) -> np.ndarray:
        return unnormalize_actions(actions, self.action_stats)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (candidates to sample) must be a positive integer, got {k!r}")
    return int(k)


# --- dojo's own generalist ---


@dataclasses.dataclass(frozen=True)
class GeneralistConfig:
    """dojo's generalist: a flow-matching head (FQL's velocity MLP, networks.FlowMLP) over a chunk of
    `chunk_len` actions, conditioned on the observation features (the state; with `camera_keys`, the conv
    encoder of networks.ObsEncoder too) and the instruction's embedding. Trained by BC (rectified flow)."""

    chunk_len: int = 4
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    layer_norm: bool = True
    flow_steps: int = 10  # Euler steps from noise to a chunk
    camera_keys: tuple[str, ...] = ()
    feature_dim: int = 50  # per camera
    aug_pad: int = 4  # DrQ random shift while training on images
    lr: float = 3e-4
    batch_size: int = 256

    def __post_init__(self):
        for name in ("chunk_len", "flow_steps", "feature_dim", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"generalist {name} must be a positive integer, got {value!r}")
        if not self.hidden_dims or any(not isinstance(h, int) or h < 1 for h in self.hidden_dims):
            raise ValueError(f"generalist hidden_dims must be positive integers, got {self.hidden_dims!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"generalist lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "GeneralistConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown generalist setting(s) {unknown}; expected some of {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@functools.lru_cache(maxsize=None)
def _modules(config: GeneralistConfig, action_dim: int):
    encoder = nets.ObsEncoder(camera_keys=config.camera_keys, feature_dim=config.feature_dim)
    velocity = nets.FlowMLP(config.chunk_len * action_dim, config.hidden_dims, config.layer_norm)
    return encoder, velocity


def _features(encoder, params, obs, lang):
    return jnp.concatenate([encoder.apply({"params": params["encoder"]}, obs), lang], -1)


def euler_chunks(velocity, params, feats, noise, steps: int):
    """Integrate the velocity field from `noise` (B, H*d) at t = 0 to t = 1 in `steps` Euler steps (FQL's
    flow_actions); no clipping: the result is in the policy's normalised space."""

    def step(x, i):
        t = jnp.full((*x.shape[:-1], 1), i / steps)
        return x + velocity.apply({"params": params["velocity"]}, feats, x, t) / steps, None

    x, _ = jax.lax.scan(step, noise, jnp.arange(steps))
    return x


@functools.lru_cache(maxsize=None)
def _sampler(config: GeneralistConfig, action_dim: int):
    encoder, velocity = _modules(config, action_dim)

    @jax.jit
    def sample(params, stats, obs, lang, noise):
        obs = nets.normalize_state(obs, stats["state_mean"], stats["state_std"])
        lang = (lang - stats["lang_mean"]) / stats["lang_std"]
        feats = _features(encoder, params, obs, lang)  # one observation: (1, F)
        feats = jnp.broadcast_to(feats, (noise.shape[0], feats.shape[-1]))
        return euler_chunks(velocity, params, feats, noise, config.flow_steps)

    return sample


@dataclasses.dataclass(frozen=True)
class GeneralistModel:
    """What a generalist file holds: architecture, params, the three normalisers, and the language encoder it
    was trained with (its id, fingerprint and folder) with the embeddings of its training instructions."""

    config: GeneralistConfig
    obs_spec: ObsSpec
    action_dim: int
    params: dict
    state_mean: np.ndarray
    state_std: np.ndarray
    lang_mean: np.ndarray
    lang_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    encoder_id: str
    encoder_fingerprint: str
    encoder_folder: str
    instructions: tuple[str, ...]
    instruction_embeddings: np.ndarray  # (len(instructions), lang_dim)
    train_info: dict = dataclasses.field(default_factory=dict)


def save_generalist(path: str | os.PathLike, model: GeneralistModel) -> None:
    """Write atomically as msgpack (flax.serialization; no pickle): arrays as arrays, the rest as one JSON string."""
    meta = {"version": GENERALIST_VERSION, "kind": GENERALIST_KIND, "config": model.config.to_dict(),
            "obs_spec": model.obs_spec.to_dict(), "action_dim": model.action_dim,
            "encoder": {"id": model.encoder_id, "fingerprint": model.encoder_fingerprint,
                        "folder": model.encoder_folder},
            "instructions": list(model.instructions), "train": model.train_info}
    arrays = {k: np.asarray(getattr(model, k), np.float32) for k in (
        "state_mean", "state_std", "lang_mean", "lang_std", "action_mean", "action_std", "instruction_embeddings")}
    blob = {"meta": json.dumps(meta), "params": jax.tree_util.tree_map(np.asarray, model.params), **arrays}
    atomic_write(os.fspath(path), flax.serialization.msgpack_serialize(blob))


def read_generalist(path: str | os.PathLike) -> GeneralistModel:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"generalist file {os.fspath(path)!r} does not exist; expected one written by "
                                "`dojo generalist train`")
    with open(path, "rb") as f:
        data = f.read()
    try:
        blob = flax.serialization.msgpack_restore(data)
        meta = json.loads(blob["meta"])
    except Exception as err:  # msgpack and json raise several types for damaged bytes
        raise ValueError(f"generalist file {os.fspath(path)!r} is not a readable generalist: {err}") from None
    if meta.get("kind") != GENERALIST_KIND or meta.get("version") != GENERALIST_VERSION:
        raise ValueError(f"generalist file {os.fspath(path)!r} is a {meta.get('kind')!r} v{meta.get('version')}; "
                         f"this dojo reads {GENERALIST_KIND} v{GENERALIST_VERSION}")
    enc = meta["encoder"]
    return GeneralistModel(
        config=GeneralistConfig.from_dict(meta["config"]), obs_spec=ObsSpec.from_dict(meta["obs_spec"]),
        action_dim=int(meta["action_dim"]), params=blob["params"],
        **{k: np.asarray(blob[k], np.float32) for k in ("state_mean", "state_std", "lang_mean", "lang_std",
                                                         "action_mean", "action_std", "instruction_embeddings")},
        encoder_id=enc["id"], encoder_fingerprint=enc["fingerprint"], encoder_folder=enc["folder"],
        instructions=tuple(meta["instructions"]), train_info=meta.get("train", {}))


class FlowGeneralist(Generalist):
    """dojo's own generalist acting: K chunks from one batched forward pass (the observation's features once, K
    noise draws through the Euler integration). Noise comes from a generator seeded by `seed`, so the same
    model, seed and calls give the same candidates.

    `encoder`: a LanguageEncoder or its folder, for instructions the file has no embedding for; it must be the
    model the generalist was trained with (same fingerprint). Without one, the recorded folder is tried, and
    only if an unknown instruction comes.
    """

    def __init__(self, model: GeneralistModel, encoder=None, seed: int = 0) -> None:
        self.model = model
        self.chunk_len, self.action_dim = model.config.chunk_len, model.action_dim
        self.action_stats = {"mean": model.action_mean.copy(), "std": model.action_std.copy()}
        self.obs_spec = model.obs_spec
        self._rng = np.random.default_rng(seed)
        self._params = jax.tree_util.tree_map(jnp.asarray, model.params)
        self._stats = {k: jnp.asarray(getattr(model, k)) for k in ("state_mean", "state_std", "lang_mean",
                                                                    "lang_std")}
        self._sample = _sampler(model.config, model.action_dim)
        self._lang = {text: model.instruction_embeddings[i] for i, text in enumerate(model.instructions)}
        self._encoder = None
        if encoder is not None:
            self._encoder = self._check_encoder(encoder)

    @property
    def instructions(self) -> tuple[str, ...]:
        return self.model.instructions

    def _check_encoder(self, encoder):
        from dojo.policies.language import LanguageEncoder, load_language_encoder

        if not isinstance(encoder, LanguageEncoder):
            encoder = load_language_encoder(encoder)
        if encoder.fingerprint != self.model.encoder_fingerprint:
            raise ValueError(f"language encoder {encoder.id} is not the one this generalist was trained with "
                             f"({self.model.encoder_id}); give that model's folder")
        return encoder

    def embed(self, instruction: str) -> np.ndarray:
        """The instruction's embedding: recorded in the file for the training instructions, else the encoder's."""
        if instruction not in self._lang:
            if self._encoder is None:
                folder = self.model.encoder_folder
                if not os.path.isdir(folder):
                    raise ValueError(f"instruction {instruction!r} was not in this generalist's training set "
                                     f"{list(self.instructions)} and its language encoder folder {folder!r} is not "
                                     "here; give the encoder's folder to embed new instructions")
                self._encoder = self._check_encoder(folder)
            self._lang[instruction] = self._encoder.encode([instruction])[0]
        return self._lang[instruction]

    def _batch_obs(self, obs: Mapping) -> dict:
        keys = (STATE_KEY, *self.model.config.camera_keys)
        missing = [k for k in keys if k not in obs]
        if missing:
            raise KeyError(f"observation lacks {missing}; this generalist reads {list(keys)}")
        state = np.asarray(obs[STATE_KEY], np.float32)
        if state.shape != (self.obs_spec.state_dim,):
            raise ValueError(f"obs['state'] must be one observation of {self.obs_spec.state_dim} values, got shape "
                             f"{state.shape}")
        return {k: np.asarray(obs[k])[None] for k in keys}

    def sample(self, obs: dict[str, np.ndarray], instruction: str, k: int) -> np.ndarray:
        k = _check_k(k)
        lang = self.embed(str(instruction))[None]
        noise = self._rng.standard_normal((k, self.chunk_len * self.action_dim)).astype(np.float32)
        chunks = self._sample(self._params, self._stats, self._batch_obs(obs), lang, noise)
        return np.asarray(chunks).reshape(k, self.chunk_len, self.action_dim)


def load_generalist(path: str | os.PathLike, encoder=None, seed: int = 0) -> FlowGeneralist:
    """dojo's generalist from its file (`dojo generalist train --out FILE`); see FlowGeneralist for `encoder`."""
    return FlowGeneralist(read_generalist(path), encoder=encoder, seed=seed)


# --- training (BC with a rectified-flow loss on action chunks) ---


@dataclasses.dataclass
class ChunkDataset:
    """Every step of every episode as (observation row, instruction index, the next chunk_len actions); a chunk
    running past its episode's end repeats the episode's last action (Diffusion Policy's edge padding)."""

    obs: dict[str, np.ndarray]  # key -> (N, ...)
    chunks: np.ndarray  # (N, H, d) canonical actions
    instruction_index: np.ndarray  # (N,) into `instructions`
    instructions: tuple[str, ...]
    episodes: int
    successes: int


def load_chunk_dataset(store, chunk_len: int, camera_keys: Sequence[str] = (),
                       successes_only: bool = False) -> ChunkDataset:
    """Read a store whose episodes carry instructions (a multi-task store) into training chunks."""
    from dojo.replay.store import open_store

    reader = open_store(store)
    keys = (STATE_KEY, *camera_keys)
    missing = [k for k in keys if k not in reader.obs_keys]
    if missing:
        raise ValueError(f"store {os.fspath(store)!r} has no observation {missing}; it has {list(reader.obs_keys)}")
    episodes = reader.read_episodes(0, reader.num_episodes, obs_keys=keys)
    obs_rows: dict[str, list] = {k: [] for k in keys}
    chunks, which, instructions = [], [], {}
    used = successes = 0
    for ep in episodes:
        if ep.info.num_steps < 1 or (successes_only and not ep.info.success):
            continue
        if not ep.info.instruction:
            raise ValueError(f"episode {ep.info.index} of store {os.fspath(store)!r} has no instruction; a "
                             "generalist trains on episodes that record theirs (e.g. the twin's scene tasks)")
        t = ep.info.num_steps
        steps = np.minimum(np.arange(t)[:, None] + np.arange(chunk_len)[None], t - 1)
        chunks.append(ep.action[steps])
        for k in keys:
            obs_rows[k].append(ep.obs[k][:t])
        which.append(np.full(t, instructions.setdefault(ep.info.instruction, len(instructions)), np.int32))
        used, successes = used + 1, successes + bool(ep.info.success)
    if not chunks:
        raise ValueError(f"store {os.fspath(store)!r} has no {'successful ' if successes_only else ''}episodes "
                         "with steps to train on")
    return ChunkDataset({k: np.concatenate(v) for k, v in obs_rows.items()}, np.concatenate(chunks).astype(np.float32),
                        np.concatenate(which), tuple(instructions), used, successes)


def _std(x: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(x.std(0), floor).astype(np.float32)


def train_generalist(store, encoder, config: GeneralistConfig | None = None, steps: int = 5000, seed: int = 0,
                     successes_only: bool = False,
                     on_progress: Callable[[int, dict], None] | None = None, log_every: int = 100) -> GeneralistModel:
    """BC of dojo's generalist on a multi-task store: rectified flow from N(0, I) to the normalised action chunk,
    conditioned on the state (and cameras) and the instruction's embedding. `encoder`: a LanguageEncoder or its
    folder. `on_progress(step, {"loss": ...})` is called every `log_every` steps and at the end."""
    import optax

    from dojo.policies.language import LanguageEncoder, load_language_encoder

    config = config or GeneralistConfig()
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(encoder, LanguageEncoder):
        encoder = load_language_encoder(encoder)
    data = load_chunk_dataset(store, config.chunk_len, config.camera_keys, successes_only)
    n, action_dim = len(data.chunks), data.chunks.shape[-1]
    state = data.obs[STATE_KEY].astype(np.float32)
    spec = ObsSpec(state.shape[-1], tuple((k, tuple(data.obs[k].shape[1:])) for k in config.camera_keys))
    embeddings = encoder.encode(data.instructions)
    flat = data.chunks.reshape(-1, action_dim)
    stats = {"state_mean": state.mean(0), "state_std": _std(state, _STATE_STD_FLOOR),
             "lang_mean": embeddings.mean(0), "lang_std": _std(embeddings, _LANG_STD_FLOOR),
             "action_mean": flat.mean(0), "action_std": _std(flat, _ACTION_STD_FLOOR)}
    targets = ((data.chunks - stats["action_mean"]) / stats["action_std"]).reshape(n, -1)

    encoder_net, velocity = _modules(config, action_dim)
    k_enc, k_vel, k_train = jax.random.split(jax.random.PRNGKey(seed), 3)
    dummy = spec.dummy(1)
    enc_params = encoder_net.init(k_enc, dummy).get("params", {})
    feats = _features(encoder_net, {"encoder": enc_params}, dummy, jnp.zeros((1, embeddings.shape[-1])))
    params = {"encoder": enc_params,
              "velocity": velocity.init(k_vel, feats, jnp.zeros((1, targets.shape[-1])), jnp.zeros((1, 1)))["params"]}
    tx = optax.adam(config.lr)
    opt_state = tx.init(params)
    device_data = {"obs": {k: jnp.asarray(v) for k, v in data.obs.items()}, "targets": jnp.asarray(targets),
                   "lang": jnp.asarray((embeddings - stats["lang_mean"]) / stats["lang_std"]),
                   "which": jnp.asarray(data.instruction_index)}
    state_mean, state_std = jnp.asarray(stats["state_mean"]), jnp.asarray(stats["state_std"])

    def loss_fn(params, idx, rng):
        k_aug, k_x0, k_t = jax.random.split(rng, 3)
        obs = nets.normalize_state({k: v[idx] for k, v in device_data["obs"].items()}, state_mean, state_std)
        if config.camera_keys and config.aug_pad > 0:
            obs = nets.augment_obs(k_aug, obs, config.camera_keys, config.aug_pad)
        x1 = device_data["targets"][idx]
        feats = _features(encoder_net, params, obs, device_data["lang"][device_data["which"][idx]])
        x0 = jax.random.normal(k_x0, x1.shape)
        t = jax.random.uniform(k_t, (x1.shape[0], 1))
        x_t = (1.0 - t) * x0 + t * x1  # rectified flow, as FQL's flow_target
        pred = velocity.apply({"params": params["velocity"]}, feats, x_t, t)
        return ((pred - (x1 - x0)) ** 2).mean()

    @jax.jit
    def update(params, opt_state, rng):
        rng, k_idx, k_loss = jax.random.split(rng, 3)
        idx = jax.random.randint(k_idx, (config.batch_size,), 0, n)
        loss, grads = jax.value_and_grad(loss_fn)(params, idx, k_loss)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, rng, loss

    rng, recent, final_loss = k_train, [], None
    for step in range(1, steps + 1):
        params, opt_state, rng, loss = update(params, opt_state, rng)
        recent.append(loss)
        if step % log_every == 0 or step == steps:
            final_loss = float(np.mean(jax.device_get(recent)))  # the mean over the last log_every steps
            recent = []
            if on_progress is not None:
                on_progress(step, {"loss": final_loss})
    return GeneralistModel(
        config=config, obs_spec=spec, action_dim=action_dim, params=jax.device_get(params),
        **{k: np.asarray(v, np.float32) for k, v in stats.items()},
        encoder_id=encoder.id, encoder_fingerprint=encoder.fingerprint, encoder_folder=os.fspath(encoder.folder),
        instructions=data.instructions, instruction_embeddings=embeddings,
        train_info={"store": os.fspath(store), "steps": steps, "seed": seed, "episodes": data.episodes,
                    "successful_episodes": data.successes, "transitions": n, "successes_only": successes_only,
                    "final_loss": final_loss})


# --- policies served over the openpi protocol ---


class OpenpiGeneralist(Generalist):
    """Any policy served over the openpi websocket protocol as a Generalist, through dojo.policies.openpi's
    PolicyClient. The observation goes out with "prompt": instruction (as openpi's clients send it); K
    candidates are K infer calls, or fewer when the server's metadata offers "max_samples_per_call" (dojo's
    own served generalist: it then takes "num_samples" and answers (n, H, d)).

    `action_stats`: the served actions' normalisation in the env's canonical units (see the module docstring);
    default: the server's metadata "action_stats", else the identity (the server answers in the env's [-1, 1]^d,
    as dojo's servers do). `chunk_len`/`action_dim` come from the metadata ("action_horizon", "action_dim") or
    from the first answer.
    """

    def __init__(self, url: str, action_stats: Mapping | None = None, timeout_s: float = 30.0,
                 wait_s: float = 0.0, api_key: str | None = None) -> None:
        from dojo.policies.openpi import PolicyClient

        self.client = PolicyClient(url, timeout_s=timeout_s, wait_s=wait_s, api_key=api_key)
        self.metadata = self.client.metadata if isinstance(self.client.metadata, dict) else {}
        self.max_per_call = int(self.metadata.get("max_samples_per_call", 1) or 1)
        horizon, dim = self.metadata.get("action_horizon"), self.metadata.get("action_dim")
        self.chunk_len = int(horizon) if horizon is not None else None
        self.action_dim = int(dim) if dim is not None else None
        stats = action_stats if action_stats is not None else self.metadata.get("action_stats")
        self.action_stats = check_action_stats(stats) if stats is not None else None
        if self.action_dim is not None and self.action_stats is None:
            self.action_stats = self._identity(self.action_dim)

    @staticmethod
    def _identity(d: int) -> dict:
        return {"low": -np.ones(d, np.float32), "high": np.ones(d, np.float32)}

    def _infer(self, obs: Mapping, instruction: str, n: int | None) -> np.ndarray:
        request = {k: np.asarray(v) for k, v in obs.items() if k not in ("prompt", "num_samples")}
        request["prompt"] = str(instruction)
        if n is not None:
            request["num_samples"] = n
        actions = np.array(self.client.infer(request)["actions"], np.float32)
        return actions if n is not None else actions[None]

    def sample(self, obs: dict[str, np.ndarray], instruction: str, k: int) -> np.ndarray:
        k = _check_k(k)
        chunks = []
        while sum(len(c) for c in chunks) < k:
            left = k - sum(len(c) for c in chunks)
            chunks.append(self._infer(obs, instruction, min(left, self.max_per_call) if self.max_per_call > 1
                                      else None))
        out = np.concatenate(chunks)[:k]
        if out.ndim != 3:
            raise ValueError(f"policy server at {self.client.url} answered actions of shape {out.shape[1:]}; "
                             "expected (H, action_dim)")
        if self.chunk_len is None or self.action_dim is None:
            self.chunk_len, self.action_dim = int(out.shape[1]), int(out.shape[2])
        if self.action_stats is None:
            self.action_stats = self._identity(self.action_dim)
        if out.shape[1:] != (self.chunk_len, self.action_dim):
            raise ValueError(f"policy server at {self.client.url} answered chunks of shape {out.shape[1:]}, "
                             f"expected ({self.chunk_len}, {self.action_dim}) as its metadata or first answer said")
        return out

    def close(self) -> None:
        self.client.close()
