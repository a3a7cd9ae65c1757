"""Cal-QL (Nakamoto et al. 2023): SAC + the CQL regulariser whose policy-action Q-values are lower-bounded
by Monte-Carlo returns (batch["mc_return"]) so pre-trained values stay calibrated for online fine-tuning.
alpha fixed (cql_alpha) or Lagrange-tuned to a target action gap. Usable offline and online. Sparse 0/1 goal
rewards can be scaled and biased as in Cal-QL's antmaze runs (reward_scale, reward_bias; `scale_rewards`).
"""

from __future__ import annotations

import dataclasses
import functools

import flax
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dojo.learners import common
from dojo.policies import networks as nets
from dojo.policies.snapshot import policy_apply
from dojo.policies.spaces import ActionScale, ObsSpec


@dataclasses.dataclass(frozen=True)
class Config(common.EncoderFields):
    """Cal-QL's published defaults (nakamotoo/Cal-QL, JaxCQL conservative_sac)."""

    agent_name: str = "calql"
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    temp_lr: float = 1e-4
    batch_size: int = 256
    actor_hidden_dims: tuple[int, ...] = (256, 256)
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256, 256)
    num_qs: int = 2
    critic_layer_norm: bool = False
    discount: float = 0.99
    tau: float = 0.005
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -action_dim
    backup_entropy: bool = False
    cql_n_actions: int = 10
    cql_alpha: float = 5.0  # weight of the conservative term ("cql_min_q_weight")
    cql_temp: float = 1.0
    cql_lagrange: bool = False
    cql_target_action_gap: float = 0.8  # only with cql_lagrange
    enable_calql: bool = True  # False: plain CQL
    demo_ratio: float = 0.5  # offline share of each online batch ("mixing_ratio")
    # r -> reward_scale * r + reward_bias, in the TD target and the Monte-Carlo bound alike (`scale_rewards`).
    # The published defaults 1 and 0 leave rewards as they are; Cal-QL's antmaze runs (0/1 goal rewards) use 10 and -5.
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    # CQL's `cql_max_target_backup` (on in Cal-QL's antmaze runs): the TD target takes the best of cql_n_actions
    # sampled next actions (each scored by the min of the target critics) instead of one sample.
    max_target_backup: bool = False
    # Learning rates rise linearly from 0 over the first this many updates (0: from the start at full rate).
    lr_warmup_steps: int = 0


def get_config(**overrides) -> Config:
    return Config(**overrides)


@functools.lru_cache(maxsize=None)
def _modules(config: Config, spec: ObsSpec, action_dim: int):
    encoder = common.make_encoder(config, spec)
    critic = nets.CriticEnsemble(encoder, config.critic_hidden_dims, config.num_qs, config.critic_layer_norm)
    actor = nets.Actor(action_dim, config.actor_hidden_dims, tanh_squash=True)
    return encoder, critic, actor


def _optimisers(config: Config):
    """Adam for the critic, the actor, the temperature and the CQL multiplier (at the critic's rate)."""
    return tuple(common.adam(lr, config.lr_warmup_steps)
                 for lr in (config.critic_lr, config.actor_lr, config.temp_lr, config.critic_lr))


def scale_rewards(reward, mc_return, scale: float, bias: float, gamma: float):
    """(scale * r + bias, the Monte-Carlo return-to-go of those rewards) for one-step transitions.

    The batch's mc_return G was computed from the unscaled rewards. Scaling alone multiplies it; the bias
    needs the steps L left in the episode, which a batch does not carry. For sparse goal rewards (0 on every
    step, 1 on the step that succeeds and ends the episode: the twin's tasks, Cal-QL's antmaze) G tells them:
    a success L steps away has G = gamma^(L-1), so its scaled return sum_{k<L} gamma^k bias + gamma^(L-1) scale
    is scale * G + bias * (1 - gamma * G) / (1 - gamma); a failure has G = 0 and gets bias / (1 - gamma),
    Cal-QL's value of failing forever (replay_buffer.calc_return_to_go). With bias 0 this is exact for any
    rewards. Needs mc_return at `gamma` (a learner's mirror holds them at its agent's discount, whatever a store
    was written with) and n_step 1 (checked before a run starts).
    """
    scaled_mc = scale * mc_return + bias * (1.0 - gamma * mc_return) / (1.0 - gamma)
    return scale * reward + bias, scaled_mc


def cql_regulariser(q_data, q_rand, q_pi, log_pi, q_next_pi, log_pi_next, mc_return, action_dim: int,
                    cql_temp: float, calibrate: bool):
    """Per-critic conservative gap: mean_b [temp * logsumexp(Q_ood / temp) - Q(s, a_data)].

    q_data (E, B); q_rand, q_pi, q_next_pi (E, B, N) = Q(s, .) at uniform actions, pi(s) samples and
    pi(s') samples; log_pi, log_pi_next (B, N). With `calibrate` (Cal-QL) the policy-action values are
    max(Q, mc_return) before importance weighting. Returns (E,).
    """
    if calibrate:
        bound = mc_return[None, :, None]
        q_pi, q_next_pi = jnp.maximum(q_pi, bound), jnp.maximum(q_next_pi, bound)
    log_uniform_density = action_dim * np.log(0.5)  # uniform on [-1, 1]^A
    cat = jnp.concatenate([q_rand - log_uniform_density, q_next_pi - jax.lax.stop_gradient(log_pi_next)[None],
                           q_pi - jax.lax.stop_gradient(log_pi)[None]], axis=-1)
    ood = jax.nn.logsumexp(cat / cql_temp, axis=-1) * cql_temp
    return (ood - q_data).mean(axis=1)


def target_q(critic, target_params, next_obs, next_action):
    """min over the target critics of Q(s', a'); next_action (B, A) -> (B,) or (B, N, A) -> (B, N)."""
    if next_action.ndim == 2:
        return critic.apply({"params": target_params}, next_obs, next_action).min(0)
    feats = critic.apply({"params": target_params}, next_obs, method="encode")
    feats = jnp.repeat(feats[:, None], next_action.shape[1], 1)
    return critic.apply({"params": target_params}, feats, next_action, method="from_features").min(0)


def best_of(next_q, next_logp):
    """Each row's best sampled action: (B, N) Q-values and log-probs -> (B,) at the row's argmax Q."""
    best = next_q.argmax(-1)[:, None]
    return jnp.take_along_axis(next_q, best, -1)[:, 0], jnp.take_along_axis(next_logp, best, -1)[:, 0]


class CalQLAgent(flax.struct.PyTreeNode):
    rng: jax.Array
    step: jax.Array
    critic_params: dict
    target_critic_params: dict
    actor_params: dict
    log_temp: jax.Array
    log_cql_alpha: jax.Array  # Lagrange multiplier (log); unused when cql_lagrange is False
    critic_opt: optax.OptState
    actor_opt: optax.OptState
    temp_opt: optax.OptState
    cql_alpha_opt: optax.OptState
    state_mean: jax.Array
    state_std: jax.Array
    config: Config = flax.struct.field(pytree_node=False)
    obs_spec: ObsSpec = flax.struct.field(pytree_node=False)
    action_scale: ActionScale = flax.struct.field(pytree_node=False)

    @property
    def modules(self):
        return _modules(self.config, self.obs_spec, self.action_scale.dim)

    def critic_loss(self, critic_params, batch, rng):
        cfg = self.config
        _, critic, actor = self.modules
        k_next, k_rand, k_pi, k_pi_next = jax.random.split(rng, 4)
        b, n, a = batch["action"].shape[0], cfg.cql_n_actions, self.action_scale.dim

        def policy(feats, key, shape):
            mean, log_std = actor.apply({"params": self.actor_params}, jax.lax.stop_gradient(feats))
            if shape:
                mean, log_std = (jnp.repeat(x[:, None], n, 1) for x in (mean, log_std))
            return nets.sample_and_log_prob(key, mean, log_std, True)

        # TD target from the min of the target critics
        next_feats_online = critic.apply({"params": self.critic_params}, batch["next_obs"], method="encode")
        next_action, next_logp = policy(next_feats_online, k_next, (n,) if cfg.max_target_backup else ())
        next_q = target_q(critic, self.target_critic_params, batch["next_obs"], next_action)
        if cfg.max_target_backup:
            next_q, next_logp = best_of(next_q, next_logp)
        if cfg.backup_entropy:
            next_q = next_q - jnp.exp(self.log_temp) * next_logp
        reward, mc_return = scale_rewards(batch["reward"], batch.get("mc_return", jnp.zeros_like(batch["reward"])),
                                          cfg.reward_scale, cfg.reward_bias, cfg.discount)
        target = jax.lax.stop_gradient(reward + batch["discount"] * next_q)

        feats = critic.apply({"params": critic_params}, batch["obs"], method="encode")
        q_data = critic.apply({"params": critic_params}, feats, batch["action"], method="from_features")
        td_loss = ((q_data - target[None]) ** 2).mean(axis=1)  # (E,)

        # conservative term: Q at uniform, pi(s) and pi(s') actions, all evaluated at s
        feats_n = jnp.repeat(feats[:, None], n, 1)
        rand_actions = jax.random.uniform(k_rand, (b, n, a), minval=-1.0, maxval=1.0)
        pi_actions, log_pi = policy(feats, k_pi, (n,))
        next_feats = critic.apply({"params": critic_params}, batch["next_obs"], method="encode")
        pi_next_actions, log_pi_next = policy(next_feats, k_pi_next, (n,))

        def q_at(actions):
            return critic.apply({"params": critic_params}, feats_n, actions, method="from_features")

        q_pi = q_at(pi_actions)
        gap = cql_regulariser(q_data, q_at(rand_actions), q_pi, log_pi, q_at(pi_next_actions),
                              log_pi_next, mc_return, a, cfg.cql_temp, cfg.enable_calql)
        if cfg.cql_lagrange:
            alpha = jnp.clip(jnp.exp(self.log_cql_alpha), 0.0, 1e6) * cfg.cql_alpha
            cql_loss = alpha * (gap - cfg.cql_target_action_gap)
        else:
            cql_loss = cfg.cql_alpha * gap
        loss = (td_loss + cql_loss).sum()
        # calibration diagnostics (Cal-QL logs these): the (scaled) MC return the policy's Q is held above,
        # and how often the bound is active
        return loss, {"critic_loss": loss, "td_loss": td_loss.mean(), "cql_gap": gap.mean(),
                      "q": q_data.mean(), "target_q": target.mean(), "q_pi": q_pi.mean(),
                      "mc_return": mc_return.mean(), "bound_rate": (q_pi < mc_return[None, :, None]).mean()}

    def actor_loss(self, actor_params, batch, rng):
        _, critic, actor = self.modules
        feats = jax.lax.stop_gradient(critic.apply({"params": self.critic_params}, batch["obs"], method="encode"))
        mean, log_std = actor.apply({"params": actor_params}, feats)
        action, logp = nets.sample_and_log_prob(rng, mean, log_std, True)
        q = critic.apply({"params": self.critic_params}, feats, action, method="from_features").min(axis=0)
        loss = (jnp.exp(self.log_temp) * logp - q).mean()
        return loss, {"actor_loss": loss, "entropy": -logp.mean()}

    @jax.jit
    def update(self, batch):
        cfg = self.config
        common.check_batch(batch, self.obs_spec, self.action_scale.dim)
        if "mc_return" not in batch and cfg.enable_calql:
            raise KeyError("Cal-QL needs batch['mc_return'] (Monte-Carlo return-to-go); the batch lacks it")
        critic_tx, actor_tx, temp_tx, alpha_tx = _optimisers(cfg)
        rng, k_o, k_n, k_critic, k_actor = jax.random.split(self.rng, 5)
        batch = dict(batch, obs=common.preprocess(self, k_o, batch["obs"], True),
                     next_obs=common.preprocess(self, k_n, batch["next_obs"], True))

        grads, info = jax.grad(self.critic_loss, has_aux=True)(self.critic_params, batch, k_critic)
        updates, critic_opt = critic_tx.update(grads, self.critic_opt, self.critic_params)
        critic_params = optax.apply_updates(self.critic_params, updates)

        log_cql_alpha, cql_alpha_opt = self.log_cql_alpha, self.cql_alpha_opt
        if cfg.cql_lagrange:  # raise alpha while the gap exceeds its target, lower it otherwise
            alpha_grad = jax.grad(lambda la: -jnp.exp(la) * cfg.cql_alpha * (info["cql_gap"] - cfg.cql_target_action_gap))(
                log_cql_alpha)
            updates, cql_alpha_opt = alpha_tx.update(alpha_grad, cql_alpha_opt, log_cql_alpha)
            log_cql_alpha = optax.apply_updates(log_cql_alpha, updates)

        grads, actor_info = jax.grad(self.actor_loss, has_aux=True)(self.actor_params, batch, k_actor)
        updates, actor_opt = actor_tx.update(grads, self.actor_opt, self.actor_params)
        actor_params = optax.apply_updates(self.actor_params, updates)

        target_entropy = -self.action_scale.dim if cfg.target_entropy is None else cfg.target_entropy
        temp_grad = jax.grad(lambda lt: jnp.exp(lt) * (actor_info["entropy"] - target_entropy))(self.log_temp)
        updates, temp_opt = temp_tx.update(temp_grad, self.temp_opt, self.log_temp)
        log_temp = optax.apply_updates(self.log_temp, updates)

        info = {**info, **actor_info, "temperature": jnp.exp(log_temp), "cql_alpha": jnp.exp(log_cql_alpha) * cfg.cql_alpha}
        return self.replace(
            rng=rng, step=self.step + 1, critic_params=critic_params, critic_opt=critic_opt,
            target_critic_params=nets.soft_update(self.target_critic_params, critic_params, cfg.tau),
            actor_params=actor_params, actor_opt=actor_opt, log_temp=log_temp, temp_opt=temp_opt,
            log_cql_alpha=log_cql_alpha, cql_alpha_opt=cql_alpha_opt), info

    @jax.jit
    def sample_actions(self, obs, rng=None):
        encoder, _, actor = self.modules
        obs = common.preprocess(self, None, obs, augment=False)
        params = {"encoder": self.critic_params.get("encoder", {}), "actor": self.actor_params}
        return policy_apply("gaussian", encoder, actor, params, obs, rng, rng is None)

    def snapshot(self):
        encoder, _, actor = self.modules
        return common.make_snapshot(self, "gaussian", encoder, actor, self.critic_params.get("encoder"),
                                    self.actor_params, common.actor_fields(actor))


def create(seed: int, obs_space, action_space, config: Config | None = None, obs_stats: dict | None = None):
    config = config or get_config()
    if config.cql_n_actions < 1:
        raise ValueError(f"cql_n_actions must be >= 1, got {config.cql_n_actions}")
    spec, scale = common.as_spec(obs_space), common.as_scale(action_space)
    _, critic, actor = _modules(config, spec, scale.dim)
    rng, k_critic, k_actor = jax.random.split(jax.random.PRNGKey(seed), 3)
    obs = spec.dummy(1, config.frame_stack)
    critic_params = critic.init(k_critic, obs, jnp.zeros((1, scale.dim)))["params"]
    critic_params = common.with_pretrained_trunk(flax.core.unfreeze(critic_params), config, spec)
    actor_params = actor.init(k_actor, critic.apply({"params": critic_params}, obs, method="encode"))["params"]
    log_temp = jnp.asarray(np.log(config.init_temperature), jnp.float32)
    log_cql_alpha = jnp.zeros((), jnp.float32)
    critic_tx, actor_tx, temp_tx, alpha_tx = _optimisers(config)
    mean, std = common.state_stats(spec, obs_stats)
    return CalQLAgent(rng=rng, step=jnp.zeros((), jnp.int32), critic_params=critic_params,
                      target_critic_params=critic_params, actor_params=actor_params, log_temp=log_temp,
                      log_cql_alpha=log_cql_alpha, critic_opt=critic_tx.init(critic_params),
                      actor_opt=actor_tx.init(actor_params), temp_opt=temp_tx.init(log_temp),
                      cql_alpha_opt=alpha_tx.init(log_cql_alpha), state_mean=mean, state_std=std,
                      config=config, obs_spec=spec, action_scale=scale)
