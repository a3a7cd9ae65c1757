"""Rewards from a reward model for stored episodes (`dojo replay relabel`): the reward of step t is the model's
verdict on the frame it led to, o_{t+1}. Success models give 1.0 on success and 0.0 otherwise (the twin's sparse
reward); preference models give their scaled reward. Only rewards, mc_return and the episodes' reward_source
change; observations are never rewritten.
"""

from __future__ import annotations

import os

import numpy as np

from dojo.replay.store import Episode, relabel_rewards
from dojo.rewards.base import STATE_KEY, RewardModel


def episode_rewards(model: RewardModel, episode: Episode, batch_size: int = 256) -> np.ndarray:
    """(num_steps,) float32 rewards of one stored episode under `model`."""
    keys = set(model.manifest.inputs) | ({STATE_KEY} if model.manifest.state_check else set())
    missing = sorted(keys - set(episode.obs))
    if missing:
        raise ValueError(f"reward model reads {sorted(keys)}, but episode {episode.info.index} has no {missing} "
                         f"(it has {sorted(episode.obs)})")
    instruction = episode.info.instruction or None
    n = len(episode.reward)
    out = []
    for i in range(1, n + 1, batch_size):
        batch = {k: episode.obs[k][i:min(i + batch_size, n + 1)] for k in keys}
        state = batch.get(STATE_KEY)
        if model.threshold is None:
            out.append(model.score(batch, instruction, state=state))
        else:
            out.append(model.success(batch, instruction, state=state).astype(np.float32))
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def relabel_store(path: str | os.PathLike, model: RewardModel) -> dict:
    """Relabel every closed episode of the store at `path` with `model`; returns counts for the command's JSON."""
    totals = {"episodes": 0, "reward_sum": 0.0}

    def reward_fn(episode: Episode) -> np.ndarray:
        reward = episode_rewards(model, episode)
        totals["episodes"] += 1
        totals["reward_sum"] += float(reward.sum())
        return reward

    steps = relabel_rewards(path, reward_fn, reward_source=model.reward_source)
    return {"store": os.fspath(path), "reward_source": model.reward_source, "episodes": totals["episodes"],
            "steps": steps, "reward_mean": totals["reward_sum"] / steps if steps else None}


# --- V-GPS's reward rule (the critic that steers a generalist) --------------------------------------------
VGPS_FINAL_STEPS = 3  # V-GPS's num_final_repeat


def vgps_rewards(num_steps: int, final_steps: int = VGPS_FINAL_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(reward, terminal) of one trajectory under V-GPS's rule: -1 on every step except the last `final_steps`,
    which get 0 and are terminal (their TD target is 0). Every trajectory counts as reaching its goal at its
    end, as V-GPS assumed of Bridge's demonstrations."""
    if num_steps < 0 or final_steps < 1:
        raise ValueError(f"need num_steps >= 0 and final_steps >= 1, got {num_steps}, {final_steps}")
    final = min(final_steps, num_steps)
    reward = np.concatenate([-np.ones(num_steps - final, np.float32), np.zeros(final, np.float32)])
    terminal = np.concatenate([np.zeros(num_steps - final, bool), np.ones(final, bool)])
    return reward, terminal


def vgps_mc_return(reward: np.ndarray, terminal: np.ndarray, gamma: float) -> np.ndarray:
    """Monte-Carlo return-to-go G_t = r_t + gamma * (1 - terminal_t) * G_{t+1} (V-GPS's td_mask scan)."""
    out, running = np.zeros(len(reward), np.float64), 0.0
    for t in range(len(reward) - 1, -1, -1):
        running = float(reward[t]) + gamma * running * (0.0 if terminal[t] else 1.0)
        out[t] = running
    return out.astype(np.float32)


def vgps_episode_pieces(episode: Episode, gamma: float, final_steps: int = VGPS_FINAL_STEPS,
                        failures: bool = False) -> list[dict]:
    """One stored episode as transitions under V-GPS's rule, in pieces a ReplayMirror takes (`add_episode`
    keyword arguments), since a mirror's episode may end only once: the steps up to the first of the final
    `final_steps` (which ends it, terminal), then each later final step as a one-step terminal piece. Every
    transition (s_t, a_t, r_t, s_t+1, terminal_t) and its MC return are V-GPS's.

    With `failures`, an episode the store records as failed (finished, not a success) never reaches its goal:
    -1 on every step, none terminal (its end is a cut: the TD target bootstraps), and the MC return of failing
    forever, -1 / (1 - gamma), as V-GPS gives its negative goals. Without, every episode follows the rule."""
    n = episode.info.num_steps
    if failures and episode.info.finished and not episode.info.success:
        truncated = np.zeros(n, bool)
        truncated[-1] = True
        return [{"obs": dict(episode.obs), "action": episode.action, "reward": -np.ones(n, np.float32),
                 "terminal": np.zeros(n, bool), "truncated": truncated, "intervened": episode.intervened,
                 "source": episode.info.source, "mc_return": np.full(n, -1.0 / (1.0 - gamma), np.float32)}]
    reward, terminal = vgps_rewards(n, final_steps)
    mc = vgps_mc_return(reward, terminal, gamma)
    first_final = n - min(final_steps, n)
    cuts = [(0, first_final + 1)] + [(t, t + 1) for t in range(first_final + 1, n)]
    return [{"obs": {k: v[a:b + 1] for k, v in episode.obs.items()}, "action": episode.action[a:b],
             "reward": reward[a:b], "terminal": terminal[a:b], "truncated": np.zeros(b - a, bool),
             "intervened": episode.intervened[a:b], "source": episode.info.source, "mc_return": mc[a:b]}
            for a, b in cuts if b > a]
