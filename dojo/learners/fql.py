"""FQL (Park et al. 2025, flow Q-learning): a flow-matching behaviour policy trained by BC, and a one-step
policy mu(s, z) distilled from it (weight alpha) while maximising Q (optionally normalised by |Q|).
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
from dojo.policies.snapshot import policy_apply
from dojo.policies.spaces import ActionScale, ObsSpec


@dataclasses.dataclass(frozen=True)
class Config(common.EncoderFields):
    """FQL's published defaults (seohongpark/fql, agents/fql.py)."""

    agent_name: str = "fql"
    lr: float = 3e-4
    batch_size: int = 256
    actor_hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    value_hidden_dims: tuple[int, ...] = (512, 512, 512, 512)
    layer_norm: bool = True  # critic
    actor_layer_norm: bool = False
    num_qs: int = 2
    discount: float = 0.99
    tau: float = 0.005
    q_agg: str = "mean"  # "mean" or "min" over the critics
    alpha: float = 10.0  # distillation weight
    flow_steps: int = 10  # Euler steps of the BC flow
    normalize_q_loss: bool = False
    demo_ratio: float = 0.0  # FQL appends online data to the offline set and samples uniformly


def get_config(**overrides) -> Config:
    return Config(**overrides)


@functools.lru_cache(maxsize=None)
def _modules(config: Config, spec: ObsSpec, action_dim: int):
    encoder = common.make_encoder(config, spec)
    critic = nets.CriticEnsemble(encoder, config.value_hidden_dims, config.num_qs, config.layer_norm)
    bc_flow = nets.FlowMLP(action_dim, config.actor_hidden_dims, config.actor_layer_norm)
    onestep = nets.FlowMLP(action_dim, config.actor_hidden_dims, config.actor_layer_norm)
    return encoder, critic, bc_flow, onestep


def flow_target(x0, x1, t):
    """Rectified-flow interpolation: x_t = (1 - t) x0 + t x1 and its constant velocity x1 - x0."""
    return (1.0 - t) * x0 + t * x1, x1 - x0


class FQLAgent(flax.struct.PyTreeNode):
    rng: jax.Array
    step: jax.Array
    critic_params: dict
    target_critic_params: dict
    actor_params: dict  # {"bc_flow": ..., "onestep": ...}
    critic_opt: optax.OptState
    actor_opt: optax.OptState
    state_mean: jax.Array
    state_std: jax.Array
    config: Config = flax.struct.field(pytree_node=False)
    obs_spec: ObsSpec = flax.struct.field(pytree_node=False)
    action_scale: ActionScale = flax.struct.field(pytree_node=False)

    @property
    def modules(self):
        return _modules(self.config, self.obs_spec, self.action_scale.dim)

    def _agg(self, qs):
        return qs.mean(0) if self.config.q_agg == "mean" else qs.min(0)

    def flow_actions(self, bc_params, feats, noise):
        """Integrate the BC flow from `noise` with Euler steps; clipped to [-1, 1]."""
        _, _, bc_flow, _ = self.modules
        n = self.config.flow_steps

        def step(x, i):
            t = jnp.full((*x.shape[:-1], 1), i / n)
            return x + bc_flow.apply({"params": bc_params}, feats, x, t) / n, None

        x, _ = jax.lax.scan(step, noise, jnp.arange(n))
        return jnp.clip(x, -1.0, 1.0)

    def critic_loss(self, critic_params, batch, rng):
        _, critic, _, onestep = self.modules
        next_feats = jax.lax.stop_gradient(critic.apply({"params": self.critic_params}, batch["next_obs"], method="encode"))
        noise = jax.random.normal(rng, batch["action"].shape)
        next_action = jnp.clip(onestep.apply({"params": self.actor_params["onestep"]}, next_feats, noise), -1.0, 1.0)
        next_q = self._agg(critic.apply({"params": self.target_critic_params}, batch["next_obs"], next_action))
        target = jax.lax.stop_gradient(batch["reward"] + batch["discount"] * next_q)
        qs = critic.apply({"params": critic_params}, batch["obs"], batch["action"])
        loss = ((qs - target[None]) ** 2).mean()
        return loss, {"critic_loss": loss, "q": qs.mean()}

    def actor_loss(self, actor_params, batch, rng):
        cfg = self.config
        _, critic, bc_flow, onestep = self.modules
        k_x0, k_t, k_z = jax.random.split(rng, 3)
        feats = jax.lax.stop_gradient(critic.apply({"params": self.critic_params}, batch["obs"], method="encode"))
        actions = batch["action"]
        x0 = jax.random.normal(k_x0, actions.shape)
        t = jax.random.uniform(k_t, (actions.shape[0], 1))
        x_t, velocity = flow_target(x0, actions, t)
        bc_flow_loss = ((bc_flow.apply({"params": actor_params["bc_flow"]}, feats, x_t, t) - velocity) ** 2).mean()

        z = jax.random.normal(k_z, actions.shape)
        target_actions = jax.lax.stop_gradient(self.flow_actions(actor_params["bc_flow"], feats, z))
        pi_actions = onestep.apply({"params": actor_params["onestep"]}, feats, z)
        distill_loss = ((pi_actions - target_actions) ** 2).mean()

        q = self._agg(critic.apply({"params": self.critic_params}, feats, jnp.clip(pi_actions, -1.0, 1.0),
                                   method="from_features"))
        q_loss = -q.mean()
        if cfg.normalize_q_loss:
            q_loss = q_loss / jax.lax.stop_gradient(jnp.abs(q).mean())
        loss = bc_flow_loss + cfg.alpha * distill_loss + q_loss
        return loss, {"actor_loss": loss, "bc_flow_loss": bc_flow_loss, "distill_loss": distill_loss,
                      "q_loss": q_loss}

    @jax.jit
    def update(self, batch):
        cfg = self.config
        common.check_batch(batch, self.obs_spec, self.action_scale.dim)
        tx = optax.adam(cfg.lr)
        rng, k_o, k_n, k_c, k_a = jax.random.split(self.rng, 5)
        batch = dict(batch, obs=common.preprocess(self, k_o, batch["obs"], True),
                     next_obs=common.preprocess(self, k_n, batch["next_obs"], True))
        grads, c_info = jax.grad(self.critic_loss, has_aux=True)(self.critic_params, batch, k_c)
        updates, critic_opt = tx.update(grads, self.critic_opt, self.critic_params)
        critic_params = optax.apply_updates(self.critic_params, updates)
        grads, a_info = jax.grad(self.actor_loss, has_aux=True)(self.actor_params, batch, k_a)
        updates, actor_opt = tx.update(grads, self.actor_opt, self.actor_params)
        return self.replace(
            rng=rng, step=self.step + 1, critic_params=critic_params, critic_opt=critic_opt,
            target_critic_params=nets.soft_update(self.target_critic_params, critic_params, cfg.tau),
            actor_params=optax.apply_updates(self.actor_params, updates), actor_opt=actor_opt), {**c_info, **a_info}

    @jax.jit
    def sample_actions(self, obs, rng=None):
        """One-step policy actions; without `rng` the noise is z = 0 (deterministic)."""
        encoder, _, _, onestep = self.modules
        obs = common.preprocess(self, None, obs, augment=False)
        params = {"encoder": self.critic_params.get("encoder", {}), "actor": self.actor_params["onestep"]}
        return policy_apply("flow_onestep", encoder, onestep, params, obs, rng, rng is None)

    def snapshot(self):
        encoder, _, _, onestep = self.modules
        return common.make_snapshot(self, "flow_onestep", encoder, onestep, self.critic_params.get("encoder"),
                                    self.actor_params["onestep"], common.actor_fields(onestep))


def create(seed: int, obs_space, action_space, config: Config | None = None, obs_stats: dict | None = None):
    config = config or get_config()
    if config.q_agg not in ("mean", "min"):
        raise ValueError(f"q_agg must be 'mean' or 'min', got {config.q_agg!r}")
    if config.flow_steps < 1:
        raise ValueError(f"flow_steps must be >= 1, got {config.flow_steps}")
    spec, scale = common.as_spec(obs_space), common.as_scale(action_space)
    _, critic, bc_flow, onestep = _modules(config, spec, scale.dim)
    rng, k_c, k_b, k_o = jax.random.split(jax.random.PRNGKey(seed), 4)
    obs = spec.dummy(1, config.frame_stack)
    action = jnp.zeros((1, scale.dim))
    critic_params = critic.init(k_c, obs, action)["params"]
    critic_params = common.with_pretrained_trunk(flax.core.unfreeze(critic_params), config, spec)
    feats = critic.apply({"params": critic_params}, obs, method="encode")
    actor_params = {"bc_flow": bc_flow.init(k_b, feats, action, jnp.zeros((1, 1)))["params"],
                    "onestep": onestep.init(k_o, feats, action)["params"]}
    tx = optax.adam(config.lr)
    mean, std = common.state_stats(spec, obs_stats)
    return FQLAgent(rng=rng, step=jnp.zeros((), jnp.int32), critic_params=critic_params,
                    target_critic_params=critic_params, actor_params=actor_params,
                    critic_opt=tx.init(critic_params), actor_opt=tx.init(actor_params), state_mean=mean,
                    state_std=std, config=config, obs_spec=spec, action_scale=scale)
