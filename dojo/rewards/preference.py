"""Preference rewards ("Real-World Offline RL from VLM Feedback", RL-VLM-F): a labeller answers which of two frames
is closer to the goal (0 / 1 / unsure); an ensemble of 3 reward networks is fitted to the answers with the
Bradley-Terry model, P(second preferred) = sigmoid(r(second) - r(first)); its mean, scaled to [0, 1] over the
frames it was fitted on, relabels a store's rewards for offline RL. Inputs are cameras (conv encoders, DrQ
shifts) and/or the proprioceptive "state".
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dojo.policies import networks as nets
from dojo.rewards.base import STATE_KEY, Manifest, RewardModel, load_flax_params, save_flax_model

UNSURE = -1


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    inputs: tuple[str, ...] = ("front", "wrist")  # cameras and/or "state"
    channels: tuple[int, ...] = (32, 32, 32, 32)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    feature_dim: int = 50
    hidden_dims: tuple[int, ...] = (256, 256)
    ensemble: int = 3  # RL-VLM-F's ensemble size
    aug_pad: int = 4
    learning_rate: float = 3e-4
    batch_size: int = 256  # pairs per update
    steps: int = 3000
    queries: int = 10_000  # pairs asked of the labeller
    holdout_fraction: float = 0.1  # pairs kept out to measure agreement
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("a preference reward needs at least one input (a camera or 'state'), got none")
        for name in ("ensemble", "batch_size", "steps", "queries", "feature_dim"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(k for k in self.inputs if k != STATE_KEY)


class RewardNet(nn.Module):
    cameras: Sequence[str]
    channels: Sequence[int]
    strides: Sequence[int]
    feature_dim: int
    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, obs: dict):
        x = nets.ObsEncoder(tuple(self.cameras), tuple(self.channels), tuple(self.strides), self.feature_dim,
                            name="encoder")(obs)
        x = nets.MLP(tuple(self.hidden_dims), activate_final=True, layer_norm=True)(x)
        return nn.Dense(1, kernel_init=nets.default_init())(x)[..., 0]


def bradley_terry_loss(reward_a, reward_b, label):
    """Mean -log P(answer) under Bradley-Terry: label 0 prefers a, 1 prefers b (0.5: a tie). Works on any
    matching shapes, e.g. (ensemble, batch) rewards against (batch,) labels."""
    label = jnp.asarray(label, jnp.float32)
    logit_b = reward_b - reward_a
    return -jnp.mean(label * jax.nn.log_sigmoid(logit_b) + (1.0 - label) * jax.nn.log_sigmoid(-logit_b))


def _make_net(config: dict, inputs: tuple[str, ...]):
    cameras = tuple(k for k in inputs if k != STATE_KEY)
    return nets.ensemble(RewardNet, config["ensemble"])(cameras, tuple(config["channels"]), tuple(config["strides"]),
                                                        config["feature_dim"], tuple(config["hidden_dims"]))


def _as_obs(inputs: dict, keys: tuple[str, ...]) -> dict:
    """Model inputs -> the encoder's obs dict (an empty state when the model reads cameras only)."""
    first = inputs[keys[0]]
    obs = {k: inputs[k] for k in keys}
    if STATE_KEY not in obs:
        obs[STATE_KEY] = jnp.zeros((first.shape[0], 0), jnp.float32)
    return obs


class PreferenceReward(RewardModel):
    """score() is the ensemble's mean reward scaled to [0, 1] by the range seen on its training frames."""

    def __init__(self, manifest: Manifest, params) -> None:
        self.manifest = manifest
        self.net = _make_net(manifest.config, manifest.inputs)
        self.params = jax.device_put(params)
        low, high = manifest.config.get("reward_low", 0.0), manifest.config.get("reward_high", 1.0)
        keys = manifest.inputs
        scale = 1.0 / max(high - low, 1e-6)
        self._apply = jax.jit(lambda p, x: jnp.clip((self.net.apply(p, _as_obs(x, keys)).mean(0) - low) * scale,
                                                    0.0, 1.0))
        self._raw = jax.jit(lambda p, x: self.net.apply(p, _as_obs(x, keys)))

    def _score(self, inputs, instruction):
        return np.asarray(self._apply(self.params, inputs))

    def raw_rewards(self, inputs: dict) -> np.ndarray:
        """(ensemble, B) unscaled rewards of checked inputs."""
        return np.asarray(self._raw(self.params, inputs))

    def save(self, folder) -> Manifest:
        self.manifest = save_flax_model(folder, self.params, self.manifest)
        return self.manifest

    @classmethod
    def load(cls, folder: Path, manifest: Manifest) -> PreferenceReward:
        return cls(manifest, load_flax_params(folder, "preference reward"))


def ask_labeller(labeller, obs: dict[str, np.ndarray], queries: int, instruction: str, seed: int = 0,
                 batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, answer) for `queries` uniformly drawn pairs of distinct rows of `obs`."""
    n = len(next(iter(obs.values())))
    if n < 2:
        raise ValueError(f"preference queries need at least 2 frames, got {n}")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, queries)
    second = (first + rng.integers(1, n, queries)) % n  # never the same row twice
    answers = [labeller.compare({k: v[first[i:i + batch_size]] for k, v in obs.items()},
                                {k: v[second[i:i + batch_size]] for k, v in obs.items()}, instruction)
               for i in range(0, queries, batch_size)]
    return first, second, np.concatenate(answers).astype(np.int8)


def train_preference(obs: dict[str, np.ndarray], first: np.ndarray, second: np.ndarray, answer: np.ndarray,
                     config: PreferenceConfig, instructions: Sequence[str] = (), data: tuple = (),
                     progress: bool | None = None) -> PreferenceReward:
    """Fit the ensemble to the sure answers (unsure ones are dropped, as RL-VLM-F does) and scale its reward by the
    0.5th-99.5th percentile range of its mean over all of `obs`."""
    import optax
    from tqdm import tqdm

    sure = np.asarray(answer) != UNSURE
    first, second, answer = np.asarray(first)[sure], np.asarray(second)[sure], np.asarray(answer)[sure]
    if len(answer) < 2:
        raise ValueError(f"preference training needs at least 2 sure answers, got {len(answer)}")
    rng_np = np.random.default_rng(config.seed)
    order = rng_np.permutation(len(answer))
    n_held = int(round(config.holdout_fraction * len(answer)))
    held, train = order[:n_held], order[n_held:]
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
                if k != "inputs"}
    net = _make_net(settings, config.inputs)
    keys = config.inputs
    rng = jax.random.PRNGKey(config.seed)
    params = net.init(rng, _as_obs({k: jnp.asarray(obs[k][:1]) for k in keys}, keys))
    tx = optax.adam(config.learning_rate)
    opt_state = tx.init(params)
    cameras = config.cameras

    @jax.jit
    def update(params, opt_state, obs_a, obs_b, label, key):
        if cameras and config.aug_pad:
            ka, kb = jax.random.split(key)
            obs_a = nets.augment_obs(ka, obs_a, cameras, config.aug_pad)
            obs_b = nets.augment_obs(kb, obs_b, cameras, config.aug_pad)

        def loss_fn(p):
            ra, rb = net.apply(p, _as_obs(obs_a, keys)), net.apply(p, _as_obs(obs_b, keys))
            return bradley_terry_loss(ra, rb, label), (rb > ra)

        (loss, prefers_b), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, jnp.mean(prefers_b == (label > 0.5))

    bar = tqdm(range(config.steps), desc="train preference reward", unit="step", file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))
    for step in bar:
        idx = train[rng_np.integers(0, len(train), config.batch_size)]
        rng, key = jax.random.split(rng)
        params, opt_state, loss, agree = update(params, opt_state, {k: obs[k][first[idx]] for k in keys},
                                                {k: obs[k][second[idx]] for k in keys}, answer[idx], key)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}", agree=f"{float(agree):.3f}")
    bar.close()
    manifest = Manifest(kind="preference", inputs=tuple(keys),
                        image_size=tuple(obs[cameras[0]].shape[1:3]) if cameras else None, threshold=None,
                        instructions=tuple(instructions), data=tuple(data), config=settings)
    model = PreferenceReward(manifest, params)
    mean = np.concatenate([model.raw_rewards({k: obs[k][i:i + 1024] for k in keys}).mean(0)
                           for i in range(0, len(obs[keys[0]]), 1024)])
    low, high = np.percentile(mean, [0.5, 99.5])
    metrics = {"answers": int(len(answer)), "unsure_dropped": int(np.sum(~sure)), "holdout_pairs": int(n_held)}
    if n_held:
        metrics["holdout_agreement"] = float(np.mean((mean[second[held]] > mean[first[held]]) == (answer[held] == 1)))
    config_out = {**settings, "reward_low": float(low), "reward_high": float(high)}
    model = PreferenceReward(dataclasses.replace(manifest, config=config_out, metrics=metrics), params)
    return model


def read_rows(readers: Sequence, keys: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every row of the closed episodes of `readers` (StoreReaders), key -> (N, ...), and their instructions."""
    parts: dict[str, list] = {k: [] for k in keys}
    instructions: list[str] = []
    for reader in readers:
        for key in keys:
            if key not in reader.obs_keys:
                raise ValueError(f"store {reader.path} has no observation {key!r}; it has {reader.obs_keys}")
        if reader.num_episodes:
            stop = reader.episodes[-1].stop_row
            for key in keys:
                parts[key].append(reader.read(f"obs/{key}", 0, stop))
        for episode in reader.episodes:
            if episode.instruction not in instructions:
                instructions.append(episode.instruction)
    if not any(parts[k] for k in keys):
        raise ValueError(f"the stores {[str(r.path) for r in readers]} hold no closed episodes")
    return {k: np.concatenate(v) for k, v in parts.items()}, instructions
