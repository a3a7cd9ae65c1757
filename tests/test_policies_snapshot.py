"""Inference snapshots: the Policy reproduces the agent's actions and loads without learner code."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from dojo.learners import sac
from dojo.policies.snapshot import Policy, load_snapshot, save_snapshot

SPACE = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32),
                         "front": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)})
ACTIONS = gym.spaces.Box(np.array([0.0, -5.0], np.float32), np.array([1.0, 5.0], np.float32))
CFG = sac.get_config(hidden_dims=(16,), num_qs=2, utd_ratio=1, encoder_channels=(4,), encoder_strides=(2,),
                     encoder_feature_dim=6)


def test_policy_matches_agent_and_scales_actions(tmp_path):
    stats = {"state_mean": np.array([1.0, 2.0, 3.0]), "state_std": np.array([2.0, 2.0, 2.0])}
    agent = sac.create(0, SPACE, ACTIONS, CFG, obs_stats=stats)
    rng = np.random.default_rng(0)
    obs = {"state": rng.normal(size=(5, 3)).astype(np.float32),
           "front": rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)}
    path = str(tmp_path / "policy.msgpack")
    save_snapshot(path, agent.snapshot())
    policy = Policy(path, seed=0)
    np.testing.assert_allclose(policy.act_normalized(obs), agent.sample_actions(obs), atol=1e-6)
    env_actions = policy(obs)
    assert np.all(env_actions[:, 0] >= 0) and np.all(env_actions[:, 0] <= 1)
    np.testing.assert_allclose(policy({k: v[0] for k, v in obs.items()}), env_actions[0], atol=1e-6)
    # sampling is stochastic, batched, and within bounds
    s1, s2 = policy.act_normalized(obs, deterministic=False), policy.act_normalized(obs, deterministic=False)
    assert s1.shape == (5, 2) and not np.allclose(s1, s2) and np.all(np.abs(s1) <= 1)
    snap = load_snapshot(path)
    assert snap.version == 1 and snap.kind == "gaussian" and snap.obs_spec.camera_keys == ("front",)
    with pytest.raises(KeyError, match="front"):
        policy({"state": obs["state"]})
    with pytest.raises(ValueError, match="expects 3"):
        policy({"state": np.zeros((2, 4), np.float32), "front": obs["front"][:2]})


def test_snapshot_version_is_checked(tmp_path):
    import flax.serialization
    path = tmp_path / "old.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize({"version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_snapshot(str(path))


def test_policy_runs_without_learner_modules(tmp_path):
    path = str(tmp_path / "policy.msgpack")
    save_snapshot(path, sac.create(0, SPACE, ACTIONS, CFG).snapshot())
    code = ("import sys, numpy as np; from dojo.policies.snapshot import Policy; p = Policy(sys.argv[1]); "
            "a = p({'state': np.zeros(3, np.float32), 'front': np.zeros((16, 16, 3), np.uint8)}); "
            "bad = [m for m in ('optax', 'torch', 'dojo.learners') if m in sys.modules]; "
            "assert not bad, bad; print(a.shape)")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2,)"
