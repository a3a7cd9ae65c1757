"""SAC with the RLPD options (Ball et al. 2023): a LayerNorm critic ensemble of E with a random subset-min
of M for targets, G critic updates per call (update-to-data ratio) inside one jit, entropy backup on or off
and temperature auto-tuning. The core of SERL, HIL-SERL, RLPD and WSRL.
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
from dojo.replay.store import SOURCES

DEMO_CODE = SOURCES.index("demo")  # batch["source"] holds int8 codes into SOURCES


@dataclasses.dataclass(frozen=True)
class Config(common.EncoderFields):
    """RLPD's published defaults (rlpd/configs/rlpd_config.py, sac_config.py)."""

    agent_name: str = "sac"
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temp_lr: float = 3e-4
    batch_size: int = 256  # per critic update; one call consumes utd_ratio * batch_size transitions
    hidden_dims: tuple[int, ...] = (256, 256)
    num_qs: int = 10  # ensemble size E
    num_min_qs: int = 2  # target = min over a random subset of M
    critic_layer_norm: bool = True
    actor_layer_norm: bool = False
    discount: float = 0.99  # handed to the sampler; the batch's "discount" already holds gamma^n
    tau: float = 0.005
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -action_dim / 2 (RLPD)
    backup_entropy: bool = True
    utd_ratio: int = 20
    demo_ratio: float = 0.5  # share of each batch drawn from demos (symmetric sampling)
    # Not in RLPD (0 = off): weight of a behaviour-cloning term, the squared error between the actor's mode
    # and the demo action on the batch's demo rows (batch["source"] == demo), added to the actor loss.
    # Sparse rewards make Q nearly flat in the action early on; this keeps the actor on the demos meanwhile.
    bc_weight: float = 0.0
    # What the BC term compares with the demo action: the actor's mode, or the action it samples (the squared
    # error then adds the policy's variance on demo states: it also keeps the exploration noise near the demos').
    bc_on: str = "mode"
    # The first this many updates train the actor on the BC term alone (no Q, no entropy, the temperature held)
    # while the critic learns as usual: with `learner.offline_updates`, the online phase starts from a policy that
    # already does what the demos do, instead of waiting thousands of online updates for the Q term to get there.
    bc_only_updates: int = 0
    # Upper bound of the actor's log std (before tanh). RLPD's 2 lets the std grow wherever Q is flat in an
    # action dimension: the temperature term alone then pushes the entropy up (Adam scales its tiny gradient up).
    log_std_max: float = 2.0
    # "at_least": SAC's constraint, entropy >= target_entropy, with a temperature >= 0 that can only push the
    # entropy up. "equal": entropy == target_entropy, a signed temperature that also pulls it down.
    entropy_rule: str = "at_least"
    # The largest return possible, or None: TD targets are clipped at it (HER's target clipping). With a 0/1 reward
    # on the success step that ends the episode (practice's success sources) no return exceeds 1, and a critic that
    # rises past it overrates what the actor then chases (benchmarks/results/README.md, killed sessions).
    max_return: float | None = None
    # Not used by the update: the length of the returns in the batches the learner samples for this agent (its
    # `learner.n_step` when that is null). RLPD: 1.
    n_step: int = 1


def get_config(**overrides) -> Config:
    return Config(**overrides)


@functools.lru_cache(maxsize=None)
def _modules(config: Config, spec: ObsSpec, action_dim: int):
    encoder = common.make_encoder(config, spec)
    critic = nets.CriticEnsemble(encoder, config.hidden_dims, config.num_qs, config.critic_layer_norm)
    target_critic = nets.CriticEnsemble(encoder, config.hidden_dims, config.num_min_qs, config.critic_layer_norm)
    actor = nets.Actor(action_dim, config.hidden_dims, config.actor_layer_norm, tanh_squash=True,
                       log_std_max=config.log_std_max)
    return encoder, critic, target_critic, actor


def _optimisers(config: Config):
    return optax.adam(config.critic_lr), optax.adam(config.actor_lr), optax.adam(config.temp_lr)


def subset_min_target(next_qs, reward, discount, next_log_prob, temperature, backup_entropy: bool):
    """Bellman target from the M subsampled target critics: r + discount * (min_m Q_m - alpha * log pi).

    next_qs (M, B); reward, discount, next_log_prob (B,). `discount` is 0 at terminals.
    """
    next_v = next_qs.min(axis=0)
    if backup_entropy:
        next_v = next_v - temperature * next_log_prob
    return reward + discount * next_v


def temperature(param, rule: str):
    """The temperature from its parameter: exp(param) >= 0 for "at_least", the signed param itself for "equal"."""
    return jnp.exp(param) if rule == "at_least" else param


def demo_bc_loss(mode_action, action, source):
    """Mean over demo rows (source == the demo code) of the squared error summed over action dims; 0 if none."""
    is_demo = (source == DEMO_CODE).astype(jnp.float32)
    per_row = ((mode_action - action) ** 2).sum(-1)
    return (per_row * is_demo).sum() / jnp.maximum(is_demo.sum(), 1.0)


def split_minibatches(batch: dict, num: int) -> dict:
    """(num * B, ...) leaves -> (num, B, ...), minibatch i holding rows i, i + num, i + 2 num, ...

    A source-mixed batch lists each source's rows together; consecutive slices would give some critic
    updates only demos and others (the last one, which the actor also uses) none."""
    return jax.tree_util.tree_map(lambda x: jnp.swapaxes(x.reshape(-1, num, *x.shape[1:]), 0, 1), batch)


def subsample_heads(params: dict, idx) -> dict:
    """Keep ensemble members `idx` of the critic heads (the encoder is shared, untouched)."""
    params = dict(params)
    params["heads"] = jax.tree_util.tree_map(lambda p: p[idx], params["heads"])
    return params


class SACAgent(common.GaussianActing, flax.struct.PyTreeNode):
    rng: jax.Array
    step: jax.Array
    critic_params: dict
    target_critic_params: dict
    actor_params: dict
    log_temp: jax.Array  # log alpha (alpha itself with entropy_rule="equal": see temperature())
    critic_opt: optax.OptState
    actor_opt: optax.OptState
    temp_opt: optax.OptState
    state_mean: jax.Array
    state_std: jax.Array
    config: Config = flax.struct.field(pytree_node=False)
    obs_spec: ObsSpec = flax.struct.field(pytree_node=False)
    action_scale: ActionScale = flax.struct.field(pytree_node=False)

    @property
    def modules(self):
        return _modules(self.config, self.obs_spec, self.action_scale.dim)

    @property
    def temperature(self):
        return temperature(self.log_temp, self.config.entropy_rule)

    @property
    def cloning(self):
        """True while the actor learns the BC term alone (its first `bc_only_updates` updates)."""
        return self.step < self.config.bc_only_updates

    @property
    def target_entropy(self) -> float:
        t = self.config.target_entropy
        return -self.action_scale.dim / 2 if t is None else t

    def critic_loss(self, critic_params, batch, rng):
        """One RLPD critic step's loss on a minibatch whose obs are already preprocessed."""
        _, critic, target_critic, actor = self.modules
        k_idx, k_act = jax.random.split(rng)
        next_feats = critic.apply({"params": self.critic_params}, batch["next_obs"], method="encode")
        mean, log_std = actor.apply({"params": self.actor_params}, next_feats)
        next_action, next_logp = nets.sample_and_log_prob(k_act, mean, log_std, True)
        idx = jax.random.choice(k_idx, self.config.num_qs, (self.config.num_min_qs,), replace=False)
        next_qs = target_critic.apply({"params": subsample_heads(self.target_critic_params, idx)},
                                      batch["next_obs"], next_action)
        target = subset_min_target(next_qs, batch["reward"], batch["discount"], next_logp,
                                   self.temperature, self.config.backup_entropy)
        if self.config.max_return is not None:
            target = jnp.minimum(target, self.config.max_return)
        qs = critic.apply({"params": critic_params}, batch["obs"], batch["action"])
        loss = ((qs - jax.lax.stop_gradient(target)[None]) ** 2).mean()
        return loss, {"critic_loss": loss, "q": qs.mean(), "target_q": target.mean()}

    def actor_loss(self, actor_params, batch, rng):
        _, critic, _, actor = self.modules
        feats = jax.lax.stop_gradient(critic.apply({"params": self.critic_params}, batch["obs"], method="encode"))
        mean, log_std = actor.apply({"params": actor_params}, feats)
        action, logp = nets.sample_and_log_prob(rng, mean, log_std, True)
        q = critic.apply({"params": self.critic_params}, feats, action, method="from_features").mean(axis=0)
        loss = jnp.where(self.cloning, 0.0, (self.temperature * logp - q).mean())
        info = {"entropy": -logp.mean(), "log_std_top": log_std.mean(0).max()}
        if self.config.bc_weight > 0:
            acted = nets.mode(mean, True) if self.config.bc_on == "mode" else action
            bc = demo_bc_loss(acted, batch["action"], batch["source"])
            loss = loss + self.config.bc_weight * bc
            info["bc_loss"] = bc
        return loss, {"actor_loss": loss, **info}

    @jax.jit
    def update(self, batch):
        """utd_ratio critic updates on interleaved minibatches of `batch`, then one actor and temperature
        update on the last minibatch. `batch` holds utd_ratio * B transitions."""
        cfg = self.config
        common.check_batch(batch, self.obs_spec, self.action_scale.dim, cfg.utd_ratio)
        critic_opt_def, actor_opt_def, temp_opt_def = _optimisers(cfg)
        rng, k_aug_o, k_aug_n, k_scan, k_actor = jax.random.split(self.rng, 5)
        fields = ("obs", "next_obs", "action", "reward", "discount") + (("source",) if cfg.bc_weight > 0 else ())
        if cfg.bc_weight > 0 and "source" not in batch:
            raise KeyError(f"bc_weight={cfg.bc_weight} needs batch['source'] to find the demo rows; "
                           f"got keys {sorted(batch)}")
        batch = {k: batch[k] for k in fields}
        batch["obs"] = common.preprocess(self, k_aug_o, batch["obs"], augment=True)
        batch["next_obs"] = common.preprocess(self, k_aug_n, batch["next_obs"], augment=True)
        minibatches = split_minibatches(batch, cfg.utd_ratio)

        def critic_step(agent, inputs):
            mb, key = inputs
            grads, info = jax.grad(agent.critic_loss, has_aux=True)(agent.critic_params, mb, key)
            updates, opt = critic_opt_def.update(grads, agent.critic_opt, agent.critic_params)
            params = optax.apply_updates(agent.critic_params, updates)
            target = nets.soft_update(agent.target_critic_params, params, cfg.tau)
            return agent.replace(critic_params=params, critic_opt=opt, target_critic_params=target), info

        keys = jax.random.split(k_scan, cfg.utd_ratio)
        if self.obs_spec.camera_keys:
            # XLA:CPU runs convolutions ~10x slower inside a loop body: unroll the UTD loop for pixels
            agent = self
            for i in range(cfg.utd_ratio):
                agent, info = critic_step(agent, jax.tree_util.tree_map(lambda x: x[i], (minibatches, keys)))
        else:
            agent, infos = jax.lax.scan(critic_step, self, (minibatches, keys))
            info = jax.tree_util.tree_map(lambda x: x[-1], infos)

        last = jax.tree_util.tree_map(lambda x: x[-1], minibatches)
        grads, actor_info = jax.grad(agent.actor_loss, has_aux=True)(agent.actor_params, last, k_actor)
        updates, actor_opt = actor_opt_def.update(grads, agent.actor_opt, agent.actor_params)
        actor_params = optax.apply_updates(agent.actor_params, updates)

        def temp_loss(log_temp):
            return temperature(log_temp, cfg.entropy_rule) * (actor_info["entropy"] - self.target_entropy)

        temp_grad = jnp.where(self.cloning, 0.0, jax.grad(temp_loss)(agent.log_temp))
        updates, temp_opt = temp_opt_def.update(temp_grad, agent.temp_opt, agent.log_temp)
        log_temp = optax.apply_updates(agent.log_temp, updates)
        info = {**info, **actor_info, "temperature": temperature(log_temp, cfg.entropy_rule)}
        return agent.replace(rng=rng, step=agent.step + 1, actor_params=actor_params, actor_opt=actor_opt,
                             log_temp=log_temp, temp_opt=temp_opt), info


def create(seed: int, obs_space, action_space, config: Config | None = None, obs_stats: dict | None = None):
    """A fresh agent for a gymnasium obs space (Box or Dict; or an ObsSpec) and a Box action space."""
    config = config or get_config()
    if not 1 <= config.num_min_qs <= config.num_qs:
        raise ValueError(f"num_min_qs must be in [1, num_qs={config.num_qs}], got {config.num_min_qs}")
    if not -20.0 < config.log_std_max <= 2.0:
        raise ValueError(f"log_std_max must be in (-20, 2], got {config.log_std_max}")
    if config.entropy_rule not in ("at_least", "equal"):
        raise ValueError(f"entropy_rule must be 'at_least' or 'equal', got {config.entropy_rule!r}")
    if config.utd_ratio < 1:
        raise ValueError(f"utd_ratio must be >= 1, got {config.utd_ratio}")
    spec, scale = common.as_spec(obs_space), common.as_scale(action_space)
    _, critic, _, actor = _modules(config, spec, scale.dim)
    rng, k_critic, k_actor = jax.random.split(jax.random.PRNGKey(seed), 3)
    obs = spec.dummy(1, config.frame_stack)
    action = jnp.zeros((1, scale.dim))
    critic_params = critic.init(k_critic, obs, action)["params"]
    critic_params = common.with_pretrained_trunk(flax.core.unfreeze(critic_params), config, spec)
    feats = critic.apply({"params": critic_params}, obs, method="encode")
    actor_params = actor.init(k_actor, feats)["params"]
    t = config.init_temperature
    log_temp = jnp.asarray(jnp.log(t) if config.entropy_rule == "at_least" else t, jnp.float32)
    critic_opt, actor_opt, temp_opt = _optimisers(config)
    mean, std = common.state_stats(spec, obs_stats)
    return SACAgent(rng=rng, step=jnp.zeros((), jnp.int32), critic_params=critic_params,
                    target_critic_params=critic_params, actor_params=actor_params, log_temp=log_temp,
                    critic_opt=critic_opt.init(critic_params), actor_opt=actor_opt.init(actor_params),
                    temp_opt=temp_opt.init(log_temp), state_mean=mean, state_std=std, config=config,
                    obs_spec=spec, action_scale=scale)
