"""IQL (Kostrikov et al. 2022): expectile regression of V towards the target Q, TD learning of Q towards
r + gamma V(s'), and advantage-weighted regression (AWR) to extract the policy. Never queries OOD actions.
"""

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
from dojo.policies.spaces import ActionScale, ObsSpec


@dataclasses.dataclass(frozen=True)
class Config(common.EncoderFields):
    """IQL's published defaults (ikostrikov/implicit_q_learning, locomotion; antmaze: 0.9 / 10.0)."""

    agent_name: str = "iql"
    actor_lr: float = 3e-4
    value_lr: float = 3e-4
    critic_lr: float = 3e-4
    batch_size: int = 256
    hidden_dims: tuple[int, ...] = (256, 256)
    num_qs: int = 2
    critic_layer_norm: bool = False
    discount: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7
    awr_temperature: float = 3.0  # beta in exp(beta * advantage)
    max_awr_weight: float = 100.0
    reward_shift: float = 0.0  # added to every reward; antmaze (sparse 0/1 goals): -1.0
    demo_ratio: float = 0.0


def get_config(**overrides) -> Config:
    return Config(**overrides)


@functools.lru_cache(maxsize=None)
def _modules(config: Config, spec: ObsSpec, action_dim: int):
    encoder = common.make_encoder(config, spec)
    critic = nets.CriticEnsemble(encoder, config.hidden_dims, config.num_qs, config.critic_layer_norm)
    value = nets.VHead(config.hidden_dims, config.critic_layer_norm)
    actor = nets.Actor(action_dim, config.hidden_dims, tanh_squash=False, state_dependent_std=False,
                       log_std_min=-5.0)
    return encoder, critic, value, actor


def _optimisers(config: Config):
    return optax.adam(config.critic_lr), optax.adam(config.value_lr), optax.adam(config.actor_lr)


def expectile_loss(diff, expectile: float):
    """|tau - 1(diff < 0)| * diff^2 with diff = Q - V: V tracks an upper expectile of Q."""
    weight = jnp.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff ** 2


def awr_weights(advantage, temperature: float, max_weight: float):
    return jnp.minimum(jnp.exp(advantage * temperature), max_weight)


class IQLAgent(common.GaussianActing, flax.struct.PyTreeNode):
    rng: jax.Array
    step: jax.Array
    critic_params: dict
    target_critic_params: dict
    value_params: dict
    actor_params: dict
    critic_opt: optax.OptState
    value_opt: optax.OptState
    actor_opt: optax.OptState
    state_mean: jax.Array
    state_std: jax.Array
    config: Config = flax.struct.field(pytree_node=False)
    obs_spec: ObsSpec = flax.struct.field(pytree_node=False)
    action_scale: ActionScale = flax.struct.field(pytree_node=False)

    @property
    def modules(self):
        return _modules(self.config, self.obs_spec, self.action_scale.dim)

    def _features(self, obs):
        _, critic, _, _ = self.modules
        return jax.lax.stop_gradient(critic.apply({"params": self.critic_params}, obs, method="encode"))

    def value_loss(self, value_params, batch):
        _, critic, value, _ = self.modules
        q = critic.apply({"params": self.target_critic_params}, batch["obs"], batch["action"]).min(0)
        v = value.apply({"params": value_params}, self._features(batch["obs"]))
        loss = expectile_loss(jax.lax.stop_gradient(q) - v, self.config.expectile).mean()
        return loss, {"value_loss": loss, "v": v.mean()}

    def actor_loss(self, actor_params, batch):
        _, critic, value, actor = self.modules
        feats = self._features(batch["obs"])
        q = critic.apply({"params": self.target_critic_params}, batch["obs"], batch["action"]).min(0)
        v = value.apply({"params": self.value_params}, feats)
        weights = jax.lax.stop_gradient(awr_weights(q - v, self.config.awr_temperature, self.config.max_awr_weight))
        mean, log_std = actor.apply({"params": actor_params}, feats)
        logp = nets.log_prob(mean, log_std, batch["action"], tanh_squash=False)
        loss = -(weights * logp).mean()
        return loss, {"actor_loss": loss, "adv_weight": weights.mean()}

    def critic_loss(self, critic_params, batch):
        _, critic, value, _ = self.modules
        next_v = value.apply({"params": self.value_params}, self._features(batch["next_obs"]))
        target = jax.lax.stop_gradient(batch["reward"] + self.config.reward_shift + batch["discount"] * next_v)
        qs = critic.apply({"params": critic_params}, batch["obs"], batch["action"])
        loss = ((qs - target[None]) ** 2).mean()
        return loss, {"critic_loss": loss, "q": qs.mean()}

    @jax.jit
    def update(self, batch):
        cfg = self.config
        common.check_batch(batch, self.obs_spec, self.action_scale.dim)
        critic_tx, value_tx, actor_tx = _optimisers(cfg)
        rng, k_o, k_n = jax.random.split(self.rng, 3)
        batch = dict(batch, obs=common.preprocess(self, k_o, batch["obs"], True),
                     next_obs=common.preprocess(self, k_n, batch["next_obs"], True))
        agent = self

        grads, v_info = jax.grad(agent.value_loss, has_aux=True)(agent.value_params, batch)
        updates, value_opt = value_tx.update(grads, agent.value_opt, agent.value_params)
        agent = agent.replace(value_params=optax.apply_updates(agent.value_params, updates), value_opt=value_opt)

        grads, a_info = jax.grad(agent.actor_loss, has_aux=True)(agent.actor_params, batch)
        updates, actor_opt = actor_tx.update(grads, agent.actor_opt, agent.actor_params)
        agent = agent.replace(actor_params=optax.apply_updates(agent.actor_params, updates), actor_opt=actor_opt)

        grads, c_info = jax.grad(agent.critic_loss, has_aux=True)(agent.critic_params, batch)
        updates, critic_opt = critic_tx.update(grads, agent.critic_opt, agent.critic_params)
        critic_params = optax.apply_updates(agent.critic_params, updates)
        agent = agent.replace(critic_params=critic_params, critic_opt=critic_opt,
                              target_critic_params=nets.soft_update(agent.target_critic_params, critic_params, cfg.tau),
                              rng=rng, step=agent.step + 1)
        return agent, {**v_info, **a_info, **c_info}


def create(seed: int, obs_space, action_space, config: Config | None = None, obs_stats: dict | None = None):
    config = config or get_config()
    if not 0.0 < config.expectile < 1.0:
        raise ValueError(f"expectile must be in (0, 1), got {config.expectile}")
    spec, scale = common.as_spec(obs_space), common.as_scale(action_space)
    _, critic, value, actor = _modules(config, spec, scale.dim)
    rng, k_c, k_v, k_a = jax.random.split(jax.random.PRNGKey(seed), 4)
    obs = spec.dummy(1, config.frame_stack)
    critic_params = critic.init(k_c, obs, jnp.zeros((1, scale.dim)))["params"]
    critic_params = common.with_pretrained_trunk(flax.core.unfreeze(critic_params), config, spec)
    feats = critic.apply({"params": critic_params}, obs, method="encode")
    value_params = value.init(k_v, feats)["params"]
    actor_params = actor.init(k_a, feats)["params"]
    critic_tx, value_tx, actor_tx = _optimisers(config)
    mean, std = common.state_stats(spec, obs_stats)
    return IQLAgent(rng=rng, step=jnp.zeros((), jnp.int32), critic_params=critic_params,
                    target_critic_params=critic_params, value_params=value_params, actor_params=actor_params,
                    critic_opt=critic_tx.init(critic_params), value_opt=value_tx.init(value_params),
                    actor_opt=actor_tx.init(actor_params), state_mean=mean, state_std=std, config=config,
                    obs_spec=spec, action_scale=scale)
