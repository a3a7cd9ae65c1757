"""Rewards from human interventions (RLIF, Luo et al. 2023): the step on which a person had to take over
is the one to avoid. Plain numpy, so the learner can relabel stored episodes when it loads them."""

from __future__ import annotations

import numpy as np

INTERVENTION_MODES = ("none", "hil-serl", "rlif", "both")


def rlif_reward(intervened: np.ndarray) -> np.ndarray:
    """-1 on each policy step that is followed by the operator taking over, 0 everywhere else."""
    intervened = np.asarray(intervened, bool)
    reward = np.zeros(intervened.shape, np.float32)
    handover = ~intervened[:-1] & intervened[1:]
    reward[:-1][handover] = -1.0
    return reward


def episode_rlif_reward(episode) -> np.ndarray:
    """`rlif_reward` for a stored Episode (a ReplayMirror reward_fn): the task reward is dropped."""
    return rlif_reward(episode.intervened)


def count_interventions(intervened: np.ndarray) -> int:
    """Takeovers in an episode: runs of intervened steps."""
    flags = np.asarray(intervened, bool)
    return int(np.count_nonzero(flags[1:] & ~flags[:-1]) + bool(flags.size and flags[0]))
