"""Run a policy for a number of episodes and report what the env can tell: the return always, the success
rate only where the env reports success (an env without that signal gets no made-up 0 %)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def evaluate(env, act: Callable[[dict], np.ndarray], episodes: int, seed: int = 0) -> dict:
    """`episodes` episodes of a canonical env (dojo.policies.spaces.canonical_env) with `act(obs) -> action
    in [-1, 1]`, reset with seeds seed, seed + 1, ... Returns return_mean and, if any step's info held
    "success", success_rate (else None)."""
    successes, returns, reported = [], [], False
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        done, total, success = False, 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            reported = reported or "success" in info
            success = success or bool(info.get("success", False))
            done = terminated or truncated
        successes.append(success)
        returns.append(total)
    return {"episodes": episodes, "success_rate": float(np.mean(successes)) if reported else None,
            "return_mean": float(np.mean(returns))}


def policy_act(policy, deterministic: bool = True) -> Callable[[dict], np.ndarray]:
    """`act` for `evaluate` from anything with `act_normalized(obs, deterministic)` (a Policy, a live agent)."""
    return lambda obs: policy.act_normalized(obs, deterministic=deterministic)


def evaluate_run(run_dir, env, episodes: int, seed: int = 0) -> dict:
    """`evaluate` with a run's inference snapshot, acting deterministically (no learner code involved)."""
    import os

    from dojo import runs
    from dojo.policies.snapshot import Policy

    path = os.path.join(run_dir, runs.SNAPSHOT)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"run {str(run_dir)!r} has no {runs.SNAPSHOT} (has its learner written a checkpoint?)")
    return evaluate(env, policy_act(Policy(path, seed=seed)), episodes, seed=seed)
