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
