"""Behaviour cloning baseline: maximise the log-likelihood of dataset actions under a Gaussian policy."""

from __future__ import annotations

import dataclasses
import functools

import flax
import flax.struct
import jax
import jax.numpy as jnp
import optax

from dojo.learners import common
from dojo.policies import networks as nets
from dojo.policies.snapshot import policy_apply
from dojo.policies.spaces import ActionScale, ObsSpec


@dataclasses.dataclass(frozen=True)
class Config(common.EncoderFields):
    """OGBench's BC defaults (agents/gcbc.py without goals): fixed unit std, i.e. mean-squared error."""

    agent_name: str = "bc"
    lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    layer_norm: bool = False
    const_std: bool = True
    discount: float = 0.99  # unused by the loss; the sampler needs one
    demo_ratio: float = 0.0


def get_config(**overrides) -> Config:
    return Config(**overrides)


@functools.lru_cache(maxsize=None)
def _modules(config: Config, spec: ObsSpec, action_dim: int):
    encoder = common.make_encoder(config, spec)
    actor = nets.Actor(action_dim, config.hidden_dims, config.layer_norm, tanh_squash=False,
                       state_dependent_std=False, const_std=config.const_std, log_std_min=-5.0)
    return encoder, actor


def bc_loss(mean, log_std, actions):
    return -nets.log_prob(mean, log_std, actions, tanh_squash=False).mean()


class BCAgent(flax.struct.PyTreeNode):
    rng: jax.Array
    step: jax.Array
    params: dict  # {"encoder": ..., "actor": ...}
    opt: optax.OptState
    state_mean: jax.Array
    state_std: jax.Array
    config: Config = flax.struct.field(pytree_node=False)
    obs_spec: ObsSpec = flax.struct.field(pytree_node=False)
    action_scale: ActionScale = flax.struct.field(pytree_node=False)

    @property
    def modules(self):
        return _modules(self.config, self.obs_spec, self.action_scale.dim)

    def loss(self, params, batch):
        encoder, actor = self.modules
        feats = encoder.apply({"params": params["encoder"]}, batch["obs"])
        mean, log_std = actor.apply({"params": params["actor"]}, feats)
        loss = bc_loss(mean, log_std, batch["action"])
        return loss, {"actor_loss": loss, "mse": ((nets.mode(mean, False) - batch["action"]) ** 2).mean()}

    @jax.jit
    def update(self, batch):
        common.check_batch(batch, self.obs_spec, self.action_scale.dim)
        rng, k_o = jax.random.split(self.rng)
        batch = dict(batch, obs=common.preprocess(self, k_o, batch["obs"], True))
        grads, info = jax.grad(self.loss, has_aux=True)(self.params, batch)
        updates, opt = optax.adam(self.config.lr).update(grads, self.opt, self.params)
        return self.replace(rng=rng, step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt=opt), info

    @jax.jit
    def sample_actions(self, obs, rng=None):
        encoder, actor = self.modules
        obs = common.preprocess(self, None, obs, augment=False)
        return policy_apply("gaussian", encoder, actor, self.params, obs, rng, rng is None)

    def snapshot(self):
        encoder, actor = self.modules
        return common.make_snapshot(self, "gaussian", encoder, actor, self.params["encoder"],
                                    self.params["actor"], common.actor_fields(actor))


def create(seed: int, obs_space, action_space, config: Config | None = None, obs_stats: dict | None = None):
    config = config or get_config()
    spec, scale = common.as_spec(obs_space), common.as_scale(action_space)
    encoder, actor = _modules(config, spec, scale.dim)
    rng, k_e, k_a = jax.random.split(jax.random.PRNGKey(seed), 3)
    obs = spec.dummy(1, config.frame_stack)
    enc_params = flax.core.unfreeze(encoder.init(k_e, obs).get("params", {}))
    params = common.with_pretrained_trunk({"encoder": enc_params}, config, spec)
    params["actor"] = actor.init(k_a, encoder.apply({"params": params["encoder"]}, obs))["params"]
    mean, std = common.state_stats(spec, obs_stats)
    return BCAgent(rng=rng, step=jnp.zeros((), jnp.int32), params=params, opt=optax.adam(config.lr).init(params),
                   state_mean=mean, state_std=std, config=config, obs_spec=spec, action_scale=scale)
