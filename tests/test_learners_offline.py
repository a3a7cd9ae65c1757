"""Cal-QL, IQL, FQL and BC: each loss against a hand-computed case, then the shared agent contract
(updates, seeded determinism, exact checkpoint restore, snapshot == agent) for every agent."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from dojo.learners import bc, calql, checkpoint, fql, iql, sac
from dojo.policies.snapshot import Policy, save_snapshot
from dojo.replay.store import mc_return_to_go
from test_learners_sac import ACTION_SPACE, PIXEL_SPACE, STATE_SPACE, _leaves_equal, synthetic_batch

ENC = dict(encoder_channels=(4, 4), encoder_strides=(2, 2), encoder_feature_dim=8)
SMALL = {
    "sac": sac.get_config(hidden_dims=(16, 16), num_qs=3, utd_ratio=2, **ENC),
    "calql": calql.get_config(actor_hidden_dims=(16,), critic_hidden_dims=(16, 16), cql_n_actions=3, **ENC),
    "calql_lagrange": calql.get_config(actor_hidden_dims=(16,), critic_hidden_dims=(16,), cql_n_actions=2,
                                       cql_lagrange=True, **ENC),
    "calql_backup": calql.get_config(actor_hidden_dims=(16,), critic_hidden_dims=(16,), cql_n_actions=3,
                                     max_target_backup=True, lr_warmup_steps=3, **ENC),
    "iql": iql.get_config(hidden_dims=(16, 16), **ENC),
    "fql": fql.get_config(actor_hidden_dims=(16, 16), value_hidden_dims=(16, 16), flow_steps=3, **ENC),
    "bc": bc.get_config(hidden_dims=(16, 16), **ENC),
}
MODULES = {"sac": sac, "calql": calql, "calql_lagrange": calql, "calql_backup": calql, "iql": iql, "fql": fql, "bc": bc}


def test_calql_regulariser_matches_hand_computation():
    q_data = np.array([[1.0]])
    q_rand, q_pi, q_next = np.array([[[0.5]]]), np.array([[[-2.0]]]), np.array([[[0.3]]])
    log_pi, log_pi_next, mc_return = np.array([[0.1]]), np.array([[-0.2]]), np.array([0.0])
    # A = 1: uniform density on [-1, 1] is 0.5 -> subtract log 0.5
    def by_hand(q_pi_value):
        terms = [0.5 - math.log(0.5), 0.3 + 0.2, q_pi_value - 0.1]
        return math.log(sum(math.exp(x) for x in terms)) - 1.0
    calibrated = calql.cql_regulariser(q_data, q_rand, q_pi, log_pi, q_next, log_pi_next, mc_return, 1, 1.0, True)
    plain = calql.cql_regulariser(q_data, q_rand, q_pi, log_pi, q_next, log_pi_next, mc_return, 1, 1.0, False)
    np.testing.assert_allclose(calibrated, [by_hand(0.0)], rtol=1e-6)  # Q(s, pi) = -2 raised to mc_return 0
    np.testing.assert_allclose(plain, [by_hand(-2.0)], rtol=1e-6)
    # temperature: temp * logsumexp(x / temp)
    hot = calql.cql_regulariser(q_data, q_rand, q_pi, log_pi, q_next, log_pi_next, mc_return, 1, 2.0, False)
    terms = [0.5 - math.log(0.5), 0.5, -2.1]
    np.testing.assert_allclose(hot, [2.0 * math.log(sum(math.exp(x / 2.0) for x in terms)) - 1.0], rtol=1e-6)


def test_calql_scaled_mc_return_matches_the_return_of_scaled_rewards():
    """Cal-QL's rule (replay_buffer.calc_return_to_go) on rewards scaled first, against the store's unscaled
    return mapped by scale_rewards: a success 3 steps away, one at the last step, and a failure."""
    gamma, scale, bias = 0.9, 10.0, -5.0
    for raw, terminal in (([0, 0, 1], [0, 0, 1]), ([1], [1]), ([0, 0, 0, 0], [0, 0, 0, 0])):
        stored = mc_return_to_go(raw, terminal, gamma, failure_reward=0.0)
        scaled_reward, scaled_mc = calql.scale_rewards(np.asarray(raw, np.float32), stored, scale, bias, gamma)
        np.testing.assert_allclose(scaled_reward, scale * np.asarray(raw) + bias)
        np.testing.assert_allclose(scaled_mc, mc_return_to_go(scaled_reward, terminal, gamma, failure_reward=bias),
                                   rtol=1e-5)
    # by hand: -5 - 0.9 * 5 + 0.81 * 5 at the first step of [0, 0, 1]; -5 / (1 - 0.9) for a failure
    _, mc = calql.scale_rewards(np.zeros(2), np.array([0.81, 0.0]), scale, bias, gamma)
    np.testing.assert_allclose(mc, [-5.0 - 4.5 + 4.05, -50.0], rtol=1e-5)


def test_calql_reward_scale_and_bias_reach_the_td_target_and_the_mc_bound():
    """Through update(): with discount 0 the TD target is scale * r + bias, and the bound is the scaled MC."""
    batch = synthetic_batch(np.random.default_rng(0), 16)
    batch["reward"][:] = np.tile([0.0, 1.0], 8)
    batch["discount"][:] = 0.0
    batch["mc_return"][:] = np.tile([0.0, 0.99 ** 3], 8)
    cfg = dataclasses.replace(SMALL["calql"], reward_scale=10.0, reward_bias=-5.0)
    _, info = calql.create(0, STATE_SPACE, ACTION_SPACE, cfg).update(batch)
    np.testing.assert_allclose(float(info["target_q"]), (-5.0 + 5.0) / 2, atol=1e-5)
    success = 10.0 * 0.99 ** 3 - 5.0 * (1 - 0.99 ** 4) / 0.01
    np.testing.assert_allclose(float(info["mc_return"]), (-500.0 + success) / 2, rtol=1e-5)
    _, plain = calql.create(0, STATE_SPACE, ACTION_SPACE, SMALL["calql"]).update(batch)
    np.testing.assert_allclose([float(plain["target_q"]), float(plain["mc_return"])], [0.5, 0.99 ** 3 / 2], rtol=1e-5)


def test_calql_max_target_backup_scores_each_sampled_action_and_keeps_each_rows_best():
    agent = calql.create(0, STATE_SPACE, ACTION_SPACE, SMALL["calql_backup"])
    _, critic, _ = agent.modules
    obs = {"state": np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)}
    actions = np.random.default_rng(1).uniform(-1, 1, (4, 3, 2)).astype(np.float32)
    each = [calql.target_q(critic, agent.target_critic_params, obs, actions[:, i]) for i in range(3)]
    np.testing.assert_allclose(calql.target_q(critic, agent.target_critic_params, obs, actions),
                               np.stack(each, 1), rtol=1e-5, atol=1e-6)
    q, logp = calql.best_of(np.array([[0.1, 0.7, 0.3], [2.0, -1.0, 1.0]]), np.array([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]]))
    np.testing.assert_allclose([q, logp], [[0.7, 2.0], [-2.0, -4.0]])


def test_calql_learning_rate_warmup_starts_from_zero():
    """With a warm-up the first update moves nothing (rate 0), the next ones do; without one the first does."""
    batch = synthetic_batch(np.random.default_rng(0), 16)
    warm = calql.create(0, STATE_SPACE, ACTION_SPACE, SMALL["calql_backup"])
    first, _ = warm.update(batch)
    assert _leaves_equal(first.critic_params, warm.critic_params)
    assert _leaves_equal(first.actor_params, warm.actor_params)
    second, _ = first.update(batch)
    assert not _leaves_equal(second.critic_params, warm.critic_params)
    cold = calql.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL["calql_backup"], lr_warmup_steps=0))
    assert not _leaves_equal(cold.update(batch)[0].critic_params, cold.critic_params)
    with pytest.raises(ValueError, match="calql option lr_warmup_steps must be a number >= 0, got -1"):
        calql.get_config(lr_warmup_steps=-1)


def test_calql_reward_options_are_checked():
    for bad, match in (({"reward_scale": 0.0}, "calql option reward_scale must be a number > 0, got 0.0"),
                       ({"reward_bias": float("nan")}, "calql option reward_bias must be a finite number, got nan")):
        with pytest.raises(ValueError, match=match):
            calql.get_config(**bad)


def test_expectile_loss_and_awr_weights_match_hand_computation():
    np.testing.assert_allclose(iql.expectile_loss(np.array([2.0, -1.0, 0.0]), 0.7), [2.8, 0.3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(iql.awr_weights(np.array([0.0, 1.0, 10.0]), 3.0, 100.0),
                               [1.0, math.exp(3.0), 100.0], rtol=1e-6)


def test_iql_reward_shift_moves_the_q_target():
    """With discount 0 Q regresses onto reward + reward_shift (antmaze's -1 turns 0/1 rewards into -1/0)."""
    batch = synthetic_batch(np.random.default_rng(0), 64)
    batch["reward"][:] = 1.0
    batch["discount"][:] = 0.0
    q = {}
    for shift in (0.0, -1.0):
        agent = iql.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL["iql"], reward_shift=shift,
                                                                            critic_lr=3e-3))
        for _ in range(300):
            agent, info = agent.update(batch)
        q[shift] = float(info["q"])
    np.testing.assert_allclose([q[0.0], q[-1.0]], [1.0, 0.0], atol=0.05)


def test_flow_target_matches_hand_computation():
    x_t, velocity = fql.flow_target(np.array([0.0, 2.0]), np.array([1.0, -2.0]), 0.25)
    np.testing.assert_allclose(x_t, [0.25, 1.0])
    np.testing.assert_allclose(velocity, [1.0, -4.0])


def test_fql_flow_integration_of_a_learned_constant_field_reaches_the_data():
    """Train only the BC flow on one action; Euler integration from any noise must land near it."""
    cfg = dataclasses.replace(SMALL["fql"], alpha=0.0, lr=3e-3, flow_steps=5)
    agent = fql.create(0, STATE_SPACE, ACTION_SPACE, cfg)
    batch = synthetic_batch(np.random.default_rng(0), 64)
    batch["obs"]["state"][:] = 0.0
    batch["action"][:] = np.array([0.6, -0.4], np.float32)
    for _ in range(300):
        agent, info = agent.update(batch)
    feats = np.zeros((8, 5), np.float32)
    noise = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
    out = agent.flow_actions(agent.actor_params["bc_flow"], feats, noise)
    err = np.abs(np.asarray(out) - np.array([0.6, -0.4]))
    assert err.mean() < 0.05 and err.max() < 0.25, err
    assert np.abs(np.asarray(noise) - np.array([0.6, -0.4])).mean() > 0.5  # the flow really moved the noise


def test_bc_fits_a_state_dependent_action():
    agent = bc.create(0, STATE_SPACE, ACTION_SPACE, dataclasses.replace(SMALL["bc"], lr=3e-3))
    rng = np.random.default_rng(0)
    batch = synthetic_batch(rng, 128)
    batch["action"] = np.tanh(batch["obs"]["state"][:, :2])
    for _ in range(300):
        agent, info = agent.update(batch)
    assert float(info["mse"]) < 0.01, info


def test_calql_lower_bound_lifts_q_values_offline():
    """With high MC returns the calibrated regulariser pushes Q(s, a_data) up to at least them."""
    rng = np.random.default_rng(0)
    batch = synthetic_batch(rng, 64)
    batch["reward"][:] = 0.0
    batch["discount"][:] = 0.0
    batch["mc_return"][:] = 5.0
    q = {}
    for calibrate in (True, False):
        cfg = dataclasses.replace(SMALL["calql"], enable_calql=calibrate, critic_lr=3e-3)
        agent = calql.create(0, STATE_SPACE, ACTION_SPACE, cfg)
        for _ in range(100):
            agent, info = agent.update(batch)
        q[calibrate] = float(info["q"])
    # TD alone pulls Q to 0; the bound gives policy actions value 5, so the data-action Q is lifted above it
    assert q[True] > q[False] + 0.5, q


@pytest.mark.parametrize("name", list(SMALL))
def test_agent_contract(tmp_path, name):
    module, cfg = MODULES[name], SMALL[name]
    rng = np.random.default_rng(5)
    size = 8
    b1, b2 = synthetic_batch(rng, size), synthetic_batch(rng, size)
    agent = module.create(3, STATE_SPACE, ACTION_SPACE, cfg)
    twin = module.create(3, STATE_SPACE, ACTION_SPACE, cfg)
    agent, info = agent.update(b1)
    twin, _ = twin.update(b1)
    assert _leaves_equal(agent, twin), "same seed and batch must give identical agents"
    assert all(np.isfinite(float(v)) for v in info.values()), info

    path = str(tmp_path / "ckpt")
    checkpoint.save_checkpoint(path, agent)
    restored, _ = checkpoint.load_checkpoint(path)
    assert _leaves_equal(agent.update(b2)[0], restored.update(b2)[0])

    obs = b2["obs"]
    snap_path = str(tmp_path / "policy")
    save_snapshot(snap_path, agent.snapshot())
    np.testing.assert_allclose(Policy(snap_path).act_normalized(obs), agent.sample_actions(obs), atol=1e-5)
    sampled = np.asarray(agent.sample_actions(obs, jax.random.PRNGKey(0)))
    assert sampled.shape == (8, 2) and np.all(np.abs(sampled) <= 1.0)


@pytest.mark.parametrize("name", ["calql", "iql", "fql", "bc"])
def test_agents_train_on_pixels(name):
    module, cfg = MODULES[name], SMALL[name]
    agent = module.create(0, PIXEL_SPACE, ACTION_SPACE, cfg)
    agent, info = agent.update(synthetic_batch(np.random.default_rng(0), 4, PIXEL_SPACE))
    assert all(np.isfinite(float(v)) for v in info.values()), info
    assert {"trunk_front", "proj_front", "ln_front"} <= set(agent.snapshot().params["encoder"])


def test_calql_requires_mc_return():
    batch = synthetic_batch(np.random.default_rng(0), 4)
    del batch["mc_return"]
    with pytest.raises(KeyError, match="mc_return"):
        calql.create(0, STATE_SPACE, ACTION_SPACE, SMALL["calql"]).update(batch)
