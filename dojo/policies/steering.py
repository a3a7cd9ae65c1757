"""V-GPS at run time (Nakamoto et al., "Steering Your Generalists", CoRL 2024): a generalist proposes K action
chunks, a language-conditioned critic scores the first action of each, and the best (or a softmax draw) runs
through the policy's usual chunk execution.

Per control step, as the V-GPS code does it: sample K chunks in the generalist's normalised space, un-normalise
them with its statistics (to the env's canonical [-1, 1]), re-normalise each first action to the critic's
bounds, score Q(s, a, l) = min over the critic's heads, select (argmax at beta = 0, else a draw from
softmax(Q / beta)), and hand the chosen chunk to the execution (temporal ensembling with a sticky gripper, or
open-loop chunks). The selection and normalisation are pure functions here so tests check them by hand.

Needs jax, flax and numpy only (plus the language encoder's torch when the critic is language-conditioned).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from dojo.policies import networks as nets
from dojo.policies.generalist import unnormalize_actions
from dojo.policies.snapshot import Snapshot, load_snapshot
from dojo.policies.spaces import STATE_KEY

EXECUTIONS = ("ensemble", "open_loop")


# --- the pure parts: normalisation and selection ---------------------------------------------------------

def normalize_to_bounds(actions, low, high) -> np.ndarray:
    """Actions to [-1, 1] by per-dimension bounds (V-GPS's BOUNDS normalisation of the critic's data), clipped."""
    a, low, high = (np.asarray(x, np.float64) for x in (actions, low, high))
    if np.any(high <= low):
        raise ValueError(f"critic action bounds need high > low in every dimension, got low={low}, high={high}")
    return np.clip(2.0 * (a - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)


def critic_actions(policy_actions, policy_stats: dict, critic_low, critic_high) -> np.ndarray:
    """The round trip V-GPS makes for each candidate's first action: un-normalise with the policy's statistics
    (to the env's canonical [-1, 1], dojo.policies.generalist), re-normalise to the critic's bounds."""
    return normalize_to_bounds(unnormalize_actions(policy_actions, policy_stats), critic_low, critic_high)


def selection_probs(q, beta: float) -> np.ndarray:
    """The chance of picking each candidate: one-hot on the (first) argmax at beta = 0, else softmax(Q / beta)."""
    q = np.asarray(q, np.float64).reshape(-1)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    if beta == 0:
        probs = np.zeros(q.shape)
        probs[int(np.argmax(q))] = 1.0
        return probs
    z = np.exp((q - q.max()) / beta)
    return z / z.sum()


def select_candidate(q, beta: float, rng: np.random.Generator) -> int:
    """V-GPS's selection: argmax Q at beta = 0 (no randomness), else one draw from softmax(Q / beta)."""
    probs = selection_probs(q, beta)
    return int(np.argmax(probs)) if beta == 0 else int(rng.choice(probs.size, p=probs))


# --- execution of the chosen chunks ---------------------------------------------------------------------

@dataclasses.dataclass
class ChunkExecution:
    """How chosen chunks (H, A) of canonical actions become one action per step.

    "ensemble": a chunk is chosen every step; the action is the weighted mean of what the last H chunks
    predicted for this step (Octo's ActionEnsembler: weights exp(-temp * i), i = 0 the oldest; temp 0 is the
    plain mean). "open_loop": a chunk is chosen when the last one has run out and runs as it is.
    `sticky_steps` > 0: the gripper (last dimension) is binarised to open (+1) / closed (-1) and changes only
    after the commanded state disagrees with the held one this many steps in a row (V-GPS's Bridge setting: 3).
    `chunk_len` None: the first chunk's length (a policy server that says it only with its first answer).
    """

    mode: str = "ensemble"
    chunk_len: int | None = None
    ensemble_temp: float = 0.0
    sticky_steps: int = 0

    def __post_init__(self) -> None:
        if self.mode not in EXECUTIONS:
            raise ValueError(f"chunk execution must be one of {EXECUTIONS}, got {self.mode!r}")
        if self.chunk_len is not None and not (isinstance(self.chunk_len, (int, np.integer)) and self.chunk_len >= 1):
            raise ValueError(f"chunk_len must be an integer >= 1, got {self.chunk_len!r}")
        if not (isinstance(self.sticky_steps, (int, np.integer)) and self.sticky_steps >= 0):
            raise ValueError(f"sticky_steps must be an integer >= 0, got {self.sticky_steps!r}")
        if not (np.isfinite(self.ensemble_temp) and self.ensemble_temp >= 0):
            raise ValueError(f"ensemble_temp must be a number >= 0, got {self.ensemble_temp!r}")
        self.reset()

    def reset(self) -> None:
        self._history: collections.deque = collections.deque(maxlen=self.chunk_len)
        self._queue: list[np.ndarray] = []
        self._closed, self._disagree = False, 0  # the twin resets with the fingers open

    def needs_chunk(self) -> bool:
        return self.mode == "ensemble" or not self._queue

    def push(self, chunk) -> None:
        chunk = np.asarray(chunk, np.float32)
        if chunk.ndim != 2 or chunk.shape[0] < 1:
            raise ValueError(f"a chunk must have shape (H, action_dim), got {chunk.shape}")
        if self.chunk_len is None:
            self.chunk_len, self._history = chunk.shape[0], collections.deque(maxlen=chunk.shape[0])
        if self.mode == "ensemble":
            self._history.append(chunk)
        else:
            self._queue = list(chunk[:self.chunk_len])

    def next_action(self) -> np.ndarray:
        if self.mode == "open_loop":
            action = self._queue.pop(0)
        else:
            # chunk i of n (0 the oldest) was chosen n - 1 - i steps ago: its prediction for now is row n - 1 - i
            n = len(self._history)
            preds = [c[min(n - 1 - i, len(c) - 1)] for i, c in enumerate(self._history)]
            weights = np.exp(-self.ensemble_temp * np.arange(n))
            action = (weights[:, None] * np.stack(preds)).sum(0) / weights.sum()
        return self._sticky(np.array(action, np.float32))

    def _sticky(self, action: np.ndarray) -> np.ndarray:
        if self.sticky_steps == 0:
            return action
        wants_closed = bool(action[-1] < 0.0)
        self._disagree = self._disagree + 1 if wants_closed != self._closed else 0
        if self._disagree >= self.sticky_steps:
            self._closed, self._disagree = not self._closed, 0
        action[-1] = -1.0 if self._closed else 1.0
        return action


# --- the critic from a snapshot -------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _critic_forward(encoder_config: tuple, critic_config: tuple):
    """Jitted Q of one critic architecture: one observation encoded once, K candidate actions -> (heads, K)."""
    encoder = nets.ObsEncoder(**dict(encoder_config))
    critic = nets.CriticEnsemble(encoder, **dict(critic_config))

    @jax.jit
    def forward(params, mean, std, obs, actions):
        feats = critic.apply({"params": params}, nets.normalize_state(obs, mean, std), method="encode")
        feats = jnp.repeat(feats, actions.shape[0], axis=0)
        return critic.apply({"params": params}, feats, actions, method="from_features")
    return forward


class Critic:
    """Q(s, a, l) per head from a snapshot that carries a critic (`dojo learn --offline --agent calql|iql` with
    learner.language_encoder): the instruction's embedding is appended to the state as in training. Actions
    come in the env's canonical space and are re-normalised to the critic's bounds (its training data's
    canonical [-1, 1] unless given)."""

    def __init__(self, snapshot: Snapshot | str, language_encoder=None, action_low=None, action_high=None) -> None:
        where = snapshot if isinstance(snapshot, str) else "the snapshot"
        snap = load_snapshot(snapshot) if isinstance(snapshot, str) else snapshot
        if snap.critic_config is None or "critic" not in snap.params:
            raise ValueError(f"{where} carries no critic; train one with `dojo learn --offline --agent calql` (or iql)")
        if snap.encoder_config.get("frame_stack", 1) != 1:
            raise ValueError(f"{where}: steering reads one observation, the critic stacks "
                             f"{snap.encoder_config['frame_stack']} frames")
        self.snapshot, self.language = snap, snap.language
        self.language_dim = int(snap.language["dim"]) if snap.language else 0
        if snap.language:
            if language_encoder is None:
                raise ValueError(f"{where}'s critic reads instructions through language encoder "
                                 f"{snap.language['id']!r}; give that encoder's folder")
            if language_encoder.id != snap.language["id"]:
                raise ValueError(f"{where}'s critic was trained with language encoder {snap.language['id']!r}, "
                                 f"not {language_encoder.id!r}")
        self.encoder = language_encoder if snap.language else None
        self.action_dim = snap.action_scale.dim
        self.state_dim = snap.obs_spec.state_dim - self.language_dim  # what the env gives
        self.camera_keys = snap.obs_spec.camera_keys
        self.action_low = np.full(self.action_dim, -1.0) if action_low is None else np.asarray(action_low, float)
        self.action_high = np.full(self.action_dim, 1.0) if action_high is None else np.asarray(action_high, float)
        self._forward = _critic_forward(tuple(sorted(snap.encoder_config.items())),
                                        tuple(sorted(snap.critic_config.items())))
        self._params = jax.tree_util.tree_map(jnp.asarray, snap.params["critic"])
        self._mean, self._std = jnp.asarray(snap.state_mean), jnp.asarray(snap.state_std)

    @property
    def num_heads(self) -> int:
        return int(self.snapshot.critic_config["num_qs"])

    def critic_obs(self, obs: dict, instruction: str) -> dict:
        """One canonical observation as the critic was trained on it: batch of 1, the instruction's embedding
        appended to the state."""
        state = np.asarray(obs[STATE_KEY], np.float32).reshape(-1)
        if state.size != self.state_dim:
            raise ValueError(f"obs['state'] has {state.size} dims; the critic expects {self.state_dim}"
                             + (f" (+ {self.language_dim} of language)" if self.language_dim else ""))
        if self.encoder is not None:
            state = np.concatenate([state, self.encoder.encode([instruction])[0]])
        out = {STATE_KEY: state[None]}
        for key in self.camera_keys:
            out[key] = np.asarray(obs[key], np.uint8)[None]
        return out

    def q_values(self, obs: dict, instruction: str, actions) -> np.ndarray:
        """(heads, K) Q-values of K candidate actions (canonical env actions, (K, A)) at one observation."""
        actions = np.asarray(actions, np.float32)
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise ValueError(f"candidate actions must have shape (K, {self.action_dim}), got {actions.shape}")
        actions = normalize_to_bounds(actions, self.action_low, self.action_high)
        return np.asarray(self._forward(self._params, self._mean, self._std, self.critic_obs(obs, instruction),
                                        actions))

    def score(self, obs: dict, instruction: str, chunks) -> np.ndarray:
        """(K,) V-GPS's score of K candidate chunks (K, H, A): Q of each first action, min over the heads."""
        return self.q_values(obs, instruction, np.asarray(chunks)[:, 0]).min(axis=0)


# --- the steered policy -----------------------------------------------------------------------------------

class SteeredPolicy:
    """A generalist steered by a critic, as a policy the actor and `evaluate` act with (`act_normalized`).

    `generalist`: dojo.policies.generalist's interface (chunk_len, action_dim, action_stats,
    sample(obs, instruction, k)). `scorer`: a `Critic`, or anything with `score(obs, instruction, chunks) ->
    (K,)` (the twin's oracle in benchmarks/steering.py); None with k = 1 is the generalist unsteered, through
    the same execution. `begin_episode(instruction)` starts an episode (`SteeringEnv` calls it on reset).
    Every steering step appends to `log`: the chosen index, the Q spread among the candidates and the
    milliseconds spent sampling and scoring."""

    def __init__(self, generalist, scorer=None, k: int = 10, beta: float = 0.0,
                 execution: ChunkExecution | None = None, instruction: str = "", seed: int = 0) -> None:
        if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1):
            raise ValueError(f"K (candidates per step) must be an integer >= 1, got {k!r}")
        if not (isinstance(beta, (int, float)) and np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a number >= 0 (0: argmax), got {beta!r}")
        if scorer is None and k != 1:
            raise ValueError(f"K={k} candidates need a critic to choose among them")
        action_dim = generalist.action_dim  # None: a policy server that says it only with its first answer
        if scorer is not None and action_dim is not None and getattr(scorer, "action_dim", action_dim) != action_dim:
            raise ValueError(f"the generalist's actions have {action_dim} dims, the critic's {scorer.action_dim}")
        self.generalist, self.scorer, self.k, self.beta = generalist, scorer, int(k), float(beta)
        self.execution = execution or ChunkExecution(chunk_len=generalist.chunk_len)
        self.stats = generalist.action_stats
        self.instruction = instruction
        self.rng = np.random.default_rng(seed)
        self.log: list[dict] = []
        self.episode, self._t = -1, 0

    def begin_episode(self, instruction: str | None = None) -> None:
        if instruction:
            self.instruction = instruction
        self.execution.reset()
        self.episode, self._t = self.episode + 1, 0

    def act_normalized(self, obs: dict, deterministic: bool = False) -> np.ndarray:
        """The env's canonical action for `obs` (a steered choice when a chunk is due). `deterministic` is not
        used: at beta = 0 the choice is the argmax, and the candidates are the generalist's draws either way."""
        if self.execution.needs_chunk():
            self.execution.push(self._choose(obs))
        self._t += 1
        return self.execution.next_action()

    __call__ = act_normalized

    def _choose(self, obs: dict) -> np.ndarray:
        started = time.perf_counter()
        chunks = np.asarray(self.generalist.sample(obs, self.instruction, self.k))
        self.stats = self.stats or self.generalist.action_stats  # a server's may come with its first answer
        action_dim = getattr(self.scorer, "action_dim", self.generalist.action_dim)
        if chunks.ndim != 3 or chunks.shape[0] != self.k or chunks.shape[2] != action_dim:
            raise ValueError(f"the generalist returned chunks of shape {chunks.shape}, expected "
                             f"({self.k}, H, {action_dim})")
        chunks = unnormalize_actions(chunks, self.stats)  # the env's canonical actions
        sampled = time.perf_counter()
        if self.scorer is None:
            chosen, q = 0, np.zeros(1)
        else:
            q = np.asarray(self.scorer.score(obs, self.instruction, chunks), np.float64)
            chosen = select_candidate(q, self.beta, self.rng)
        done = time.perf_counter()
        self.log.append({"episode": self.episode, "t": self._t, "chosen": chosen,
                         "q_spread": round(float(q.max() - q.min()), 6), "q_max": round(float(q.max()), 6),
                         "q_chosen": round(float(q[chosen]), 6),
                         "sample_ms": round(1e3 * (sampled - started), 3),
                         "score_ms": round(1e3 * (done - sampled), 3)})
        return chunks[chosen]


def episode_instruction(env) -> str:
    """The instruction of the env's task ("" where it has none)."""
    return str(getattr(getattr(env.unwrapped, "task", None), "instruction", "") or "")


class SteeringEnv(gym.Wrapper):
    """The env a steered policy acts in: each reset starts the policy's episode with the task's instruction, so
    the actor and `evaluate` run it like any policy."""

    def __init__(self, env: gym.Env, policy: SteeredPolicy) -> None:
        super().__init__(env)
        self.policy = policy

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.policy.begin_episode(episode_instruction(self.env))
        return obs, info


def summarize_log(log: list[dict]) -> dict:
    """Means over the steering steps of a log: Q spread and the milliseconds spent sampling and scoring."""
    if not log:
        return {"steering_steps": 0}
    mean = lambda key: round(float(np.mean([r[key] for r in log])), 3)  # noqa: E731
    return {"steering_steps": len(log), "q_spread_mean": mean("q_spread"), "sample_ms_mean": mean("sample_ms"),
            "score_ms_mean": mean("score_ms")}
