"""The twin's simulated preference labeller: "which of these two frames is closer to the goal?" answered from
privileged state, with a configurable error rate, as the twin's simulated operator stands in for a person. On
hardware a VLM answers instead (dojo.rewards.vlm.VLMLabeller); both speak `compare(obs_a, obs_b, instruction)`.

Answers: 0 = the first frame is closer to the goal, 1 = the second, -1 = unsure (progress within
`unsure_margin`). Progress is the task's own shaped progress (`dojo.sim.tasks`, 1 once solved), read from the
task features that obs_mode "state" / "both" stores after the proprioceptive state.
"""

from __future__ import annotations

import numpy as np

from dojo.robot.env import PROPRIO_DIM
from dojo.sim.tasks import TASKS, PegInsert, PickCube, Reach

UNSURE = -1


def _pick_cube(state: np.ndarray) -> np.ndarray:
    ee, cube = state[:, 0:3], state[:, PROPRIO_DIM:PROPRIO_DIM + 3]
    lift = np.clip((cube[:, 2] - PickCube.half_size_m) / PickCube.lift_m, 0.0, 1.0)
    dense = 0.45 * (1.0 - np.tanh(10.0 * np.linalg.norm(cube - ee, axis=1))) + 0.45 * lift
    return np.where(cube[:, 2] >= PickCube.half_size_m + PickCube.lift_m, 1.0, dense)


def _reach(state: np.ndarray) -> np.ndarray:
    to_goal = np.linalg.norm(state[:, PROPRIO_DIM + 3:PROPRIO_DIM + 6], axis=1)
    return np.where(to_goal < Reach.success_radius_m, 1.0, 0.9 * (1.0 - np.tanh(10.0 * to_goal)))


def _peg_insert(state: np.ndarray) -> np.ndarray:
    err = state[:, PROPRIO_DIM + 10:PROPRIO_DIM + 13].astype(np.float64)
    inside = np.all(np.abs(err[:, :2]) < PegInsert.hole_half_m, axis=1) & (err[:, 2] <= -PegInsert.insert_depth_m)
    err = err + np.array([0.0, 0.0, PegInsert.insert_depth_m])
    return np.where(inside, 1.0, 0.9 * (1.0 - np.tanh(10.0 * np.linalg.norm(err, axis=1))))


PROGRESS = {PickCube.name: _pick_cube, Reach.name: _reach, PegInsert.name: _peg_insert}


def progress_from_state(task: str, state: np.ndarray) -> np.ndarray:
    """(N,) progress in [0, 1] of stored states (N, PROPRIO_DIM + task obs_dim) of the twin's `task`."""
    if task not in PROGRESS:
        raise ValueError(f"no simulated labeller for task {task!r}; expected one of {sorted(PROGRESS)}")
    state = np.asarray(state, np.float64).reshape(-1, np.shape(state)[-1])
    need = PROPRIO_DIM + TASKS[task].obs_dim
    if state.shape[1] != need:
        raise ValueError(f"the simulated labeller reads {task}'s privileged features from the state: expected "
                         f"{need} values (obs_mode state or both), got {state.shape[1]}")
    return PROGRESS[task](state)


class SimLabeller:
    """Compares frames by privileged progress; each sure answer is flipped with probability `error_rate`."""

    inputs = ("state",)

    def __init__(self, task: str, error_rate: float = 0.1, unsure_margin: float = 0.0, seed: int = 0) -> None:
        if task not in PROGRESS:
            raise ValueError(f"no simulated labeller for task {task!r}; expected one of {sorted(PROGRESS)}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be a probability in [0, 1], got {error_rate!r}")
        if not unsure_margin >= 0.0:
            raise ValueError(f"unsure_margin must be >= 0 (progress units), got {unsure_margin!r}")
        self.task, self.error_rate, self.unsure_margin = task, float(error_rate), float(unsure_margin)
        self.rng = np.random.default_rng(seed)

    def true_answers(self, obs_a: dict, obs_b: dict) -> np.ndarray:
        """The error-free answers (int8: 0, 1 or UNSURE)."""
        pa = progress_from_state(self.task, obs_a["state"])
        pb = progress_from_state(self.task, obs_b["state"])
        answer = (pb > pa).astype(np.int8)
        answer[np.abs(pb - pa) <= self.unsure_margin] = UNSURE
        return answer

    def compare(self, obs_a: dict, obs_b: dict, instruction: str | None = None) -> np.ndarray:
        answer = self.true_answers(obs_a, obs_b)
        flip = (answer != UNSURE) & (self.rng.random(answer.shape) < self.error_rate)
        answer[flip] = 1 - answer[flip]
        return answer
