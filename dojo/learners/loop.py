"""Training loops in one process: online (env + agent: act, store finished episodes, sample with a source
mix, update, evaluate, checkpoint) and offline (pre-train from a replay mirror). Read top to bottom.

A run directory holds checkpoint.msgpack (full learner state), policy.msgpack (inference snapshot),
metrics.jsonl (one line per evaluation) and run.json (what was run).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time

import gymnasium as gym
import jax
import numpy as np
from tqdm import tqdm

from dojo.learners import bc, calql, checkpoint, fql, iql, sac
from dojo.policies.snapshot import Policy, save_snapshot
from dojo.policies.spaces import ActionScale, ObsAdapter
from dojo.replay.sampler import ReplayMirror, symmetric_ratio

AGENTS = {"rlpd": (sac, sac.get_config), "serl": (sac, sac.get_serl_config), "sac": (sac, sac.get_sac_config),
          "calql": (calql, calql.get_config), "iql": (iql, iql.get_config), "fql": (fql, fql.get_config),
          "bc": (bc, bc.get_config)}


def make_agent(name: str, obs_space, action_space, seed: int = 0, overrides: dict | None = None,
               obs_stats: dict | None = None):
    """A fresh agent by name (rlpd, sac, calql, iql, fql, bc) with config overrides."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; expected one of {sorted(AGENTS)}")
    module, get_config = AGENTS[name]
    fields = {f.name for f in dataclasses.fields(module.Config)}
    bad = sorted(set(overrides or {}) - fields)
    if bad:
        raise ValueError(f"unknown {name} config keys {bad}; known: {sorted(fields)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()}
    return module.create(seed, obs_space, action_space, get_config(**overrides), obs_stats=obs_stats)


def state_stats(mirror: ReplayMirror, source: str | None = "demo", min_std: float = 1e-2, samples: int = 20_000,
                seed: int = 0) -> dict:
    """Mean and std of the state vector over `source`'s steps (all steps if None), for an agent's obs_stats.

    The std is floored at `min_std` so dims that are constant in demos (the held quaternion, a resting
    velocity) do not turn small online deviations into huge inputs."""
    if min_std <= 0:
        raise ValueError(f"min_std must be > 0, got {min_std}")
    ratio = None if source is None else {source: 1.0}
    states = mirror.sample(samples, np.random.default_rng(seed), source_ratio=ratio)["obs"]["state"]
    return {"state_mean": states.mean(0), "state_std": np.maximum(states.std(0), min_std)}


def make_env(env_id: str, **kwargs) -> gym.Env:
    if env_id.startswith("dojo/"):
        import dojo.sim  # noqa: F401  registers the dojo/* ids
    return gym.make(env_id, **kwargs)


@dataclasses.dataclass
class LoopConfig:
    steps: int = 30_000  # env steps (online) or updates (offline)
    seed: int = 0
    learning_starts: int = 1_000  # env steps of data before the first update
    random_steps: int = 0  # uniform random actions at the start (0 when demos or a checkpoint guide)
    warmup_steps: int = 0  # WSRL: steps of the frozen policy, no updates, before learning
    demo_ratio: float | None = None  # share of demo data per batch; None: the agent's config
    eval_every: int = 5_000
    eval_episodes: int = 10
    checkpoint_every: int = 10_000
    capacity_steps: int = 1_000_000
    n_step: int = 1  # n-step returns in sampled batches
    progress: bool = True


def _agent_batch_size(agent) -> int:
    return agent.config.batch_size * getattr(agent.config, "utd_ratio", 1)


def _sample(mirror: ReplayMirror, agent, rng, demo_ratio: float | None, n_step: int = 1):
    """A batch with `demo_ratio` of demos once both demos and other data exist; None when a ratio of 0
    (WSRL) leaves nothing to sample yet."""
    by_source = mirror.steps_by_source()
    if demo_ratio == 0.0 and by_source["demo"] == mirror.num_steps:
        return None
    ratio = None if demo_ratio is None else symmetric_ratio(by_source, demo_ratio)
    return mirror.sample(_agent_batch_size(agent), rng, n_step=n_step, gamma=agent.config.discount,
                         source_ratio=ratio)


def evaluate(env: gym.Env, act, episodes: int, seed: int = 0) -> dict:
    """Run `episodes` with `act(canonical_obs) -> env action`; success from info["success"]."""
    adapter = ObsAdapter(env.observation_space)
    successes, returns = [], []
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        done, ret, success = False, 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(adapter(obs)))
            ret += float(reward)
            success = success or bool(info.get("success", info.get("is_success", False)))
            done = terminated or truncated
        successes.append(success)
        returns.append(ret)
    return {"success_rate": float(np.mean(successes)), "return_mean": float(np.mean(returns))}


def policy_act(agent, scale: ActionScale):
    """Deterministic env-unit actions from a live agent, one obs at a time."""
    def act(obs):
        batch = {k: v[None] for k, v in obs.items()}
        return scale.to_env(np.asarray(agent.sample_actions(batch))[0])
    return act


def _write_outputs(out_dir: str, agent, extra: dict) -> None:
    checkpoint.save_checkpoint(os.path.join(out_dir, "checkpoint.msgpack"), agent, extra)
    save_snapshot(os.path.join(out_dir, "policy.msgpack"), agent.snapshot())


def _log(out_dir: str, row: dict) -> None:
    with open(os.path.join(out_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


class _EpisodeBuffer:
    def __init__(self):
        self.obs, self.action, self.reward, self.terminal, self.truncated = [], [], [], [], []

    def add_to(self, mirror: ReplayMirror, writer, success: bool, source: str = "online") -> None:
        obs = {k: np.stack([o[k] for o in self.obs]) for k in self.obs[0]}
        mirror.add_episode(obs, np.stack(self.action), np.asarray(self.reward, np.float32),
                           np.asarray(self.terminal), np.asarray(self.truncated), source=source)
        if writer is not None:
            writer.begin_episode(source=source)
            for t in range(len(self.action)):
                writer.add_step({k: v[t] for k, v in obs.items()}, self.action[t], self.reward[t],
                                self.terminal[t], self.truncated[t])
            writer.end_episode({k: v[-1] for k, v in obs.items()}, success)


def run_online(env: gym.Env, agent, mirror: ReplayMirror, cfg: LoopConfig, out_dir: str,
               eval_env: gym.Env | None = None, writer=None):
    """Act in `env`, add each finished episode to `mirror` (and `writer`, a durable store, if given),
    and update the agent once per env step after `learning_starts` (SAC's utd_ratio inside the call).
    Returns (agent, summary dict)."""
    os.makedirs(out_dir, exist_ok=True)
    adapter, scale = ObsAdapter(env.observation_space), ActionScale.from_space(env.action_space)
    if adapter.spec != agent.obs_spec or scale.dim != agent.action_scale.dim:
        raise ValueError(f"env {env.spec.id if env.spec else env} has obs {adapter.spec} and {scale.dim} actions; "
                         f"the agent expects {agent.obs_spec} and {agent.action_scale.dim}")
    demo_ratio = agent.config.demo_ratio if cfg.demo_ratio is None else cfg.demo_ratio
    rng = np.random.default_rng(cfg.seed)
    key = jax.random.PRNGKey(cfg.seed)
    env.action_space.seed(cfg.seed)
    obs, _ = env.reset(seed=cfg.seed)
    obs = adapter(obs)
    episode, updates, info, t0 = _EpisodeBuffer(), 0, {}, time.monotonic()
    episode.obs.append(obs)
    last_eval, eval_s = {"success_rate": 0.0}, 0.0
    recent_success = collections.deque(maxlen=20)  # the last training episodes (with exploration noise)
    for step in tqdm(range(1, cfg.steps + 1), disable=not cfg.progress, desc="online", mininterval=5):
        if step <= cfg.random_steps:
            action_norm = rng.uniform(-1, 1, scale.dim).astype(np.float32)
        else:
            key, k = jax.random.split(key)
            action_norm = np.asarray(agent.sample_actions({k_: v[None] for k_, v in obs.items()}, k))[0]
        next_obs, reward, terminated, truncated, step_info = env.step(scale.to_env(action_norm))
        next_obs = adapter(next_obs)
        episode.action.append(action_norm)
        episode.reward.append(float(reward))
        episode.terminal.append(bool(terminated))
        episode.truncated.append(bool(truncated))
        episode.obs.append(next_obs)
        obs = next_obs
        if terminated or truncated:
            episode.add_to(mirror, writer, bool(step_info.get("success", False)))
            recent_success.append(bool(step_info.get("success", False)))
            obs, _ = env.reset()
            obs = adapter(obs)
            episode = _EpisodeBuffer()
            episode.obs.append(obs)

        learning = step > max(cfg.learning_starts, cfg.warmup_steps) and mirror.num_steps > 0
        batch = _sample(mirror, agent, rng, demo_ratio, cfg.n_step) if learning else None
        if batch is not None:
            agent, info = agent.update(batch)
            updates += 1
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            t_eval = time.monotonic()
            last_eval = evaluate(eval_env or env, policy_act(agent, scale), cfg.eval_episodes, seed=10_000 + step)
            eval_s += time.monotonic() - t_eval
            if eval_env is None:  # evaluation reset the shared env: start a fresh episode
                obs, _ = env.reset()
                obs = adapter(obs)
                episode = _EpisodeBuffer()
                episode.obs.append(obs)
            # train_wall_s leaves out evaluation, which a real robot would not spend on each check
            _log(out_dir, {"env_steps": step, "updates": updates, "wall_s": round(time.monotonic() - t0, 2),
                           "train_wall_s": round(time.monotonic() - t0 - eval_s, 2), **last_eval,
                           "online_success_rate": float(np.mean(recent_success)) if recent_success else 0.0, **{k: float(v) for k, v in info.items()}})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            _write_outputs(out_dir, agent, {"env_steps": step, "updates": updates})
    _write_outputs(out_dir, agent, {"env_steps": cfg.steps, "updates": updates})
    return agent, {"env_steps": cfg.steps, "updates": updates, "success_rate": last_eval["success_rate"],
                   "wall_s": round(time.monotonic() - t0, 2)}


def run_offline(agent, mirror: ReplayMirror, cfg: LoopConfig, out_dir: str, eval_env: gym.Env | None = None):
    """`cfg.steps` updates on batches from `mirror` (uniform over all its data). Returns (agent, summary)."""
    os.makedirs(out_dir, exist_ok=True)
    if mirror.num_steps == 0:
        raise ValueError("the replay mirror holds no steps to pre-train on")
    rng = np.random.default_rng(cfg.seed)
    t0, info, last_eval = time.monotonic(), {}, {}
    for step in tqdm(range(1, cfg.steps + 1), disable=not cfg.progress, desc="offline", mininterval=5):
        agent, info = agent.update(mirror.sample(_agent_batch_size(agent), rng, gamma=agent.config.discount))
        evaluating = eval_env is not None and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps)
        if evaluating:
            last_eval = evaluate(eval_env, policy_act(agent, agent.action_scale), cfg.eval_episodes, seed=step)
        if evaluating or step == cfg.steps:
            _log(out_dir, {"updates": step, "wall_s": round(time.monotonic() - t0, 2), **last_eval,
                           **{k: float(v) for k, v in info.items()}})
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            _write_outputs(out_dir, agent, {"updates": step, "offline": True})
    _write_outputs(out_dir, agent, {"updates": cfg.steps, "offline": True})
    return agent, {"env_steps": 0, "updates": cfg.steps, "success_rate": last_eval.get("success_rate"),
                   "wall_s": round(time.monotonic() - t0, 2)}


def evaluate_run(run_dir: str, env: gym.Env, episodes: int, seed: int = 0) -> dict:
    """Evaluate a run's inference snapshot (no learner code involved in acting)."""
    policy = Policy(os.path.join(run_dir, "policy.msgpack"), seed=seed)
    return evaluate(env, lambda obs: policy(obs, deterministic=True), episodes, seed=seed)
