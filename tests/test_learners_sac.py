"""SAC/RLPD: the subset-min target by hand, ensemble subsampling, seeded determinism, exact checkpoint restore."""

import dataclasses

import gymnasium as gym
import jax
import numpy as np
import pytest

from dojo.learners import checkpoint, sac
from dojo.policies import networks as nets

STATE_SPACE = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (5,), np.float32)})
PIXEL_SPACE = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (3,), np.float32),
                               "front": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)})
ACTION_SPACE = gym.spaces.Box(-1, 1, (2,), np.float32)
SMALL = sac.get_config(hidden_dims=(16, 16), num_qs=4, num_min_qs=2, utd_ratio=2, batch_size=4,
                       encoder_channels=(4, 4), encoder_strides=(2, 2), encoder_feature_dim=8)


def synthetic_batch(rng, size, space=STATE_SPACE, action_dim=2):
    """A batch that follows the replay sampler's contract."""
    def obs():
        out = {}
        for key, sub in space.spaces.items():
            if sub.dtype == np.uint8:
                out[key] = rng.integers(0, 256, (size, *sub.shape), dtype=np.uint8)
            else:
                out[key] = rng.normal(size=(size, *sub.shape)).astype(np.float32)
        return out
    terminal = rng.random(size) < 0.1
    return {"obs": obs(), "next_obs": obs(), "action": rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
            "reward": rng.normal(size=size).astype(np.float32),
            "discount": np.where(terminal, 0.0, 0.99).astype(np.float32),
            "mc_return": rng.normal(size=size).astype(np.float32), "terminal": terminal,
            "intervened": np.zeros(size, bool), "source": rng.integers(0, 2, size).astype(np.int8)}


def test_subset_min_target_matches_hand_computation():
    next_qs = np.array([[1.0, 5.0], [3.0, 2.0]])  # (M=2, B=2)
    reward, discount = np.array([1.0, 0.0]), np.array([0.9, 0.0])
    next_logp = np.array([0.5, -1.0])
    # min over members: [1, 2]; minus alpha*logp with alpha=0.2: [0.9, 2.2]; second is terminal
    got = sac.subset_min_target(next_qs, reward, discount, next_logp, 0.2, backup_entropy=True)
    np.testing.assert_allclose(got, [1.0 + 0.9 * 0.9, 0.0], rtol=1e-6)
    got = sac.subset_min_target(next_qs, reward, discount, next_logp, 0.2, backup_entropy=False)
    np.testing.assert_allclose(got, [1.0 + 0.9 * 1.0, 0.0], rtol=1e-6)


def test_subsampled_heads_are_the_chosen_ensemble_members():
    agent = sac.create(0, STATE_SPACE, ACTION_SPACE, SMALL)
    _, critic, target_critic, _ = agent.modules
    batch = synthetic_batch(np.random.default_rng(0), 6)
    full = critic.apply({"params": agent.critic_params}, batch["obs"], batch["action"])
    assert full.shape == (4, 6)
    # members really differ (independent init per vmapped copy)
    assert np.abs(np.asarray(full[0] - full[1])).max() > 1e-4
    idx = np.array([3, 1])
    sub = target_critic.apply({"params": sac.subsample_heads(agent.critic_params, idx)},
                              batch["obs"], batch["action"])
    np.testing.assert_allclose(sub, full[idx], rtol=1e-5, atol=1e-6)


def test_update_runs_utd_critic_steps_and_learns_a_constant_reward():
    cfg = dataclasses.replace(SMALL, critic_lr=3e-3, utd_ratio=4)
    agent = sac.create(0, STATE_SPACE, ACTION_SPACE, cfg)
    rng = np.random.default_rng(1)
    batch = synthetic_batch(rng, 4 * 32)
    batch["reward"][:] = 1.0
    batch["discount"][:] = 0.0  # Q(s, a) = 1 for every pair
    for _ in range(60):
        agent, info = agent.update(batch)
    assert int(agent.step) == 60
    assert abs(float(info["q"]) - 1.0) < 0.1, info
    with pytest.raises(ValueError, match="multiple of utd_ratio=4"):
        agent.update(synthetic_batch(rng, 6))
    with pytest.raises(ValueError, match="expects 2"):
        agent.update(synthetic_batch(rng, 8, action_dim=3))


def test_max_return_clips_the_td_target():
    # reward 1 on every step, never terminal: the true Q is 1 / (1 - 0.99) = 100; with max_return=1 no target
    # exceeds 1, so the critic settles at 1 instead of climbing
    rng = np.random.default_rng(3)
    batch = synthetic_batch(rng, 2 * 32)
    batch["reward"][:], batch["discount"][:] = 1.0, 0.99
    for max_return, check in ((1.0, lambda q, t: t <= 1.0 + 1e-6 and abs(q - 1.0) < 0.1), (None, lambda q, t: t > 1.2)):
        agent = sac.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL, critic_lr=3e-3, tau=0.1,
                                                                            max_return=max_return))
        for _ in range(80):
            agent, info = agent.update(batch)
        assert check(float(info["q"]), float(info["target_q"])), (max_return, info)
    with pytest.raises(ValueError, match="sac option max_return must be a finite number or null, got inf"):
        sac.get_config(max_return=float("inf"))


def _leaves_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_seeded_determinism():
    batch = synthetic_batch(np.random.default_rng(2), 8)
    a, _ = sac.create(7, STATE_SPACE, ACTION_SPACE, SMALL).update(batch)
    b, _ = sac.create(7, STATE_SPACE, ACTION_SPACE, SMALL).update(batch)
    c, _ = sac.create(8, STATE_SPACE, ACTION_SPACE, SMALL).update(batch)
    assert _leaves_equal(a, b)
    assert not _leaves_equal(a.actor_params, c.actor_params)


@pytest.mark.parametrize("space", [STATE_SPACE, PIXEL_SPACE], ids=["state", "pixels"])
def test_checkpoint_restore_is_exact(tmp_path, space):
    rng = np.random.default_rng(3)
    b1, b2 = synthetic_batch(rng, 8, space), synthetic_batch(rng, 8, space)
    agent, _ = sac.create(0, space, ACTION_SPACE, SMALL).update(b1)
    path = str(tmp_path / "ckpt.msgpack")
    checkpoint.save_checkpoint(path, agent, extra={"env_steps": 123})
    restored, extra = checkpoint.load_checkpoint(path)
    assert extra == {"env_steps": 123}
    assert _leaves_equal(agent, restored)
    uninterrupted, info_a = agent.update(b2)
    resumed, info_b = restored.update(b2)
    assert _leaves_equal(uninterrupted, resumed)
    assert float(info_a["critic_loss"]) == float(info_b["critic_loss"])
    assert not (tmp_path / "ckpt.msgpack.tmp").exists()


def test_load_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        checkpoint.load_checkpoint(str(tmp_path / "nope"))
    path = str(tmp_path / "c")
    checkpoint.save_checkpoint(path, sac.create(0, STATE_SPACE, ACTION_SPACE, SMALL))
    with pytest.raises(ValueError, match="bogus"):
        checkpoint.load_checkpoint(path, {"bogus": 1})
    agent, _ = checkpoint.load_checkpoint(path, {"utd_ratio": 1})
    assert agent.config.utd_ratio == 1


def test_frozen_pretrained_trunk_is_loaded_and_stays_fixed(tmp_path):
    trunk = nets.ConvTrunk((4, 4), (2, 2))
    trunk_params = trunk.init(jax.random.PRNGKey(42), np.zeros((1, 16, 16, 3), np.uint8))["params"]
    path = str(tmp_path / "trunk.msgpack")
    nets.save_pretrained_trunk(path, trunk_params, (4, 4), (2, 2))
    cfg = dataclasses.replace(SMALL, pretrained_encoder=path)
    agent = sac.create(0, PIXEL_SPACE, ACTION_SPACE, cfg)
    for _ in range(3):
        agent, _ = agent.update(synthetic_batch(np.random.default_rng(4), 8, PIXEL_SPACE))
    assert _leaves_equal(agent.critic_params["encoder"]["trunk_front"], trunk_params)
    # the rest of the encoder still trains
    fresh = sac.create(0, PIXEL_SPACE, ACTION_SPACE, cfg)
    assert not _leaves_equal(agent.critic_params["encoder"]["proj_front"], fresh.critic_params["encoder"]["proj_front"])
    with pytest.raises(FileNotFoundError, match="missing.msgpack"):
        sac.create(0, PIXEL_SPACE, ACTION_SPACE, dataclasses.replace(SMALL, pretrained_encoder=str(tmp_path / "missing.msgpack")))


def test_config_errors():
    with pytest.raises(ValueError, match="num_min_qs"):
        sac.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL, num_min_qs=5))
    with pytest.raises(ValueError, match="action space"):
        sac.create(0, STATE_SPACE, gym.spaces.Discrete(3), SMALL)
    with pytest.raises(ValueError, match="observation space"):
        sac.create(0, gym.spaces.Discrete(3), ACTION_SPACE, SMALL)


def test_utd_minibatches_each_get_the_source_mix():
    # the sampler lists demo rows first; every critic minibatch (and the actor's) must see both halves
    batch = {"source": np.array([0] * 8 + [1] * 8, np.int8), "x": np.arange(16)}
    mbs = sac.split_minibatches(batch, 4)
    assert mbs["x"].shape == (4, 4)
    for i in range(4):
        assert sorted(np.asarray(mbs["source"][i]).tolist()) == [0, 0, 1, 1]
    assert sorted(np.asarray(mbs["x"]).ravel().tolist()) == list(range(16))


def test_demo_bc_loss_matches_hand_computation():
    mode = np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
    action = np.array([[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]], np.float32)
    source = np.array([0, 1, 0], np.int8)  # rows 0 and 2 are demos: (0.25 + 1) and (1 + 1), mean 1.625
    np.testing.assert_allclose(sac.demo_bc_loss(mode, action, source), 1.625, rtol=1e-6)
    assert float(sac.demo_bc_loss(mode, action, np.ones(3, np.int8))) == 0.0


def test_bc_weight_pulls_the_actor_to_the_demo_actions():
    cfg = dataclasses.replace(SMALL, utd_ratio=1, batch_size=32, actor_lr=3e-3, bc_weight=10.0)
    agent = sac.create(0, STATE_SPACE, ACTION_SPACE, cfg)
    batch = synthetic_batch(np.random.default_rng(3), 32)
    batch["source"][:] = 0
    batch["action"][:] = np.array([0.5, -0.5], np.float32)
    for _ in range(150):
        agent, info = agent.update(batch)
    assert float(info["bc_loss"]) < 0.02, info
    np.testing.assert_allclose(np.asarray(agent.sample_actions(batch["obs"])).mean(0), [0.5, -0.5], atol=0.1)
    del batch["source"]
    with pytest.raises(KeyError, match="bc_weight"):
        agent.update(batch)


def test_bc_only_updates_clone_the_demos_before_the_q_term_and_the_temperature_join():
    cfg = dataclasses.replace(SMALL, utd_ratio=1, batch_size=32, bc_weight=3.0, bc_only_updates=4,
                              entropy_rule="equal", init_temperature=0.01)
    agent = sac.create(0, STATE_SPACE, ACTION_SPACE, cfg)
    batch = synthetic_batch(np.random.default_rng(5), 32)
    for _ in range(4):  # the actor's loss is the BC term alone and the temperature stays where it began
        agent, info = agent.update(batch)
        np.testing.assert_allclose(info["actor_loss"], 3.0 * info["bc_loss"], rtol=1e-5)
        assert float(info["temperature"]) == pytest.approx(0.01)
    agent, info = agent.update(batch)  # then SAC's actor and temperature losses join in
    assert abs(float(info["actor_loss"]) - 3.0 * float(info["bc_loss"])) > 1e-3, info
    assert float(info["temperature"]) != pytest.approx(0.01)
    with pytest.raises(ValueError, match="bc_only_updates"):
        dataclasses.replace(SMALL, bc_only_updates=10)


def test_equal_entropy_rule_pulls_a_high_entropy_down_and_at_least_does_not():
    # A constant reward makes Q flat in the action: only the temperature term moves the policy's entropy. SAC's
    # rule (entropy >= target, temperature >= 0) can only push it up; "equal" turns the temperature negative and
    # pulls it down to the target.
    batch = synthetic_batch(np.random.default_rng(4), 64)
    batch["reward"][:] = 0.5
    entropies = {}
    for rule in ("at_least", "equal"):
        cfg = dataclasses.replace(SMALL, utd_ratio=1, batch_size=64, init_temperature=0.01, temp_lr=3e-3,
                                  target_entropy=-6.0, entropy_rule=rule)
        agent = sac.create(0, STATE_SPACE, ACTION_SPACE, cfg)
        for _ in range(300):
            agent, info = agent.update(batch)
        entropies[rule] = float(info["entropy"])
        assert (float(info["temperature"]) < 0) == (rule == "equal"), (rule, info)
    assert entropies["equal"] < -4.0 < entropies["at_least"], entropies


def test_log_std_max_caps_the_policy_std_and_travels_with_the_snapshot():
    agent = sac.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL, log_std_max=-1.5))
    _, _, _, actor = agent.modules
    params = jax.tree_util.tree_map(lambda p: p, agent.actor_params)
    params["Dense_1"]["bias"] = params["Dense_1"]["bias"] + 10.0  # the log-std head, pushed far above the cap
    _, log_std = actor.apply({"params": params}, np.ones((3, 5), np.float32))
    np.testing.assert_allclose(np.asarray(log_std), -1.5)
    assert agent.snapshot().actor_config["log_std_max"] == -1.5
    with pytest.raises(ValueError, match="entropy_rule"):
        sac.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL, entropy_rule="most"))
    with pytest.raises(ValueError, match="log_std_max"):
        sac.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL, log_std_max=3.0))
