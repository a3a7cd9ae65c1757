"""ReplayMirror batches against values computed by hand on tiny episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dojo.replay.sampler import ReplayMirror
from dojo.replay.store import EpisodeWriter

GAMMA = 0.5


def episode(first_state: int, rewards, terminal_end: bool):
    """States first_state, first_state+1, ... (T+1 rows); an image whose pixels equal the state."""
    T = len(rewards)
    states = np.arange(first_state, first_state + T + 1, dtype=np.float32)
    obs = {"state": states[:, None].repeat(2, 1), "cam": np.broadcast_to(states[:, None, None, None], (T + 1, 2, 2, 3)).astype(np.uint8)}
    terminal = np.zeros(T, bool)
    truncated = np.zeros(T, bool)
    (terminal if terminal_end else truncated)[-1] = True
    action = np.stack([states[:-1] / 100, -states[:-1] / 100], 1)
    return obs, action, np.array(rewards, np.float32), terminal, truncated


def hand_mirror(capacity: int = 100) -> ReplayMirror:
    m = ReplayMirror(capacity, mc_gamma=GAMMA)
    m.add_episode(*episode(10, [1, 2, 3], terminal_end=True), source="demo")  # A: rows 10..13
    m.add_episode(*episode(20, [0, 0, 0, 1], terminal_end=False), intervened=[0, 1, 1, 0], source="online")  # B
    return m


# Hand-computed, gamma = 0.5, n = 2. Key: the state of the sampled step.
#   A (terminal at its last step): t=0: 1 + .5*2 = 2, discount .25, next 12
#                                  t=1: 2 + .5*3 = 3.5, the terminal is inside the window: 0, next 13
#                                  t=2: n'=1: 3, 0, next 13
#   B (truncated, not terminal):   t=0: 0, .25, next 22;  t=1: 0, .25, 23;  t=2: 0 + .5*1 = .5, .25, 24
#                                  t=3: n'=1: 1, .5 (truncation bootstraps), next 24
N2 = {10: (2.0, 0.25, 12), 11: (3.5, 0.0, 13), 12: (3.0, 0.0, 13),
      20: (0.0, 0.25, 22), 21: (0.0, 0.25, 23), 22: (0.5, 0.25, 24), 23: (1.0, 0.5, 24)}
MC = {10: 1 + .5 * 2 + .25 * 3, 11: 2 + .5 * 3, 12: 3.0, 20: .125, 21: .25, 22: .5, 23: 1.0}
INTERVENED = {20: False, 21: True, 22: True, 23: False}


def test_n_step_returns_discounts_and_mc_returns_match_hand_values() -> None:
    batch = hand_mirror().sample(400, np.random.default_rng(0), n_step=2, gamma=GAMMA)
    seen = set()
    for i, s in enumerate(batch["obs"]["state"][:, 0].astype(int)):
        seen.add(s)
        reward, discount, next_state = N2[s]
        assert batch["reward"][i] == pytest.approx(reward) and batch["discount"][i] == pytest.approx(discount)
        assert batch["next_obs"]["state"][i, 0] == next_state and batch["next_obs"]["cam"][i, 1, 1, 2] == next_state
        assert batch["obs"]["cam"][i, 0, 0, 0] == s
        assert batch["mc_return"][i] == pytest.approx(MC[s])
        np.testing.assert_allclose(batch["action"][i], [s / 100, -s / 100], rtol=1e-6)
        assert batch["source"][i] == (0 if s < 20 else 1)
        assert batch["terminal"][i] == (s == 12)
        assert batch["intervened"][i] == INTERVENED.get(s, False)
    assert seen == set(N2)  # final observations (13, 24) are never sampled as steps
    assert batch["reward"].dtype == batch["discount"].dtype == batch["mc_return"].dtype == np.float32
    assert batch["action"].dtype == np.float32 and batch["source"].dtype == np.int8
    assert batch["intervened"].dtype == batch["terminal"].dtype == bool


def test_one_step_and_long_n_step() -> None:
    m = hand_mirror()
    b1 = m.sample(200, np.random.default_rng(1), n_step=1, gamma=GAMMA)
    for s, r, d, nxt in zip(b1["obs"]["state"][:, 0], b1["reward"], b1["discount"], b1["next_obs"]["state"][:, 0]):
        assert nxt == s + 1 and d == (0.0 if s == 12 else GAMMA)
    b9 = m.sample(200, np.random.default_rng(2), n_step=9, gamma=GAMMA)  # n longer than any episode
    for s, r, d, nxt in zip(b9["obs"]["state"][:, 0], b9["reward"], b9["discount"], b9["next_obs"]["state"][:, 0]):
        if s < 20:  # to the terminal end: the Monte-Carlo return, no bootstrap
            assert (r, d, nxt) == (pytest.approx(MC[s]), 0.0, 13)
        else:  # to the truncated end: bootstrap from the final observation
            assert (r, d, nxt) == (pytest.approx(MC[s]), pytest.approx(GAMMA ** (24 - s)), 24)


def test_frame_stacks_repeat_the_first_frame_oldest_first() -> None:
    batch = hand_mirror().sample(300, np.random.default_rng(3), n_step=2, gamma=GAMMA, frame_stack=3)
    assert batch["obs"]["state"].shape == (300, 3, 2) and batch["obs"]["cam"].shape == (300, 3, 2, 2, 3)
    expected = {  # state -> (obs stack, next_obs stack)
        10: ([10, 10, 10], [10, 11, 12]), 11: ([10, 10, 11], [11, 12, 13]), 12: ([10, 11, 12], [11, 12, 13]),
        20: ([20, 20, 20], [20, 21, 22]), 21: ([20, 20, 21], [21, 22, 23]), 22: ([20, 21, 22], [22, 23, 24]),
        23: ([21, 22, 23], [22, 23, 24]),
    }
    for obs, nxt, cam in zip(batch["obs"]["state"][:, :, 0], batch["next_obs"]["state"][:, :, 0], batch["obs"]["cam"]):
        stack, next_stack = expected[int(obs[-1])]
        np.testing.assert_array_equal(obs, stack)
        np.testing.assert_array_equal(nxt, next_stack)
        np.testing.assert_array_equal(cam[:, 0, 0, 0], stack)


def test_source_ratios() -> None:
    m = hand_mirror()
    m.add_episode(*episode(40, [1, 1], terminal_end=True), source="prior")
    rng = np.random.default_rng(4)
    b = m.sample(11, rng, source_ratio={"demo": 0.5})  # round(5.5) = 6 demo first, then the rest
    np.testing.assert_array_equal(b["source"][:6], 0)
    assert set(b["source"][6:]) <= {1, 3}
    for _ in range(20):
        assert not np.any(m.sample(64, rng, source_ratio={"demo": 0.0})["source"] == 0)  # WSRL
    uniform = m.sample(20_000, rng)["source"]  # FQL-style: uniform over all 3 + 4 + 2 transitions
    np.testing.assert_allclose(np.bincount(uniform, minlength=4) / 20_000, [3 / 9, 4 / 9, 0, 2 / 9], atol=0.02)
    b = m.sample(10, rng, source_ratio={"demo": 0.3, "prior": 0.7})
    np.testing.assert_array_equal(b["source"], [0] * 3 + [3] * 7)
    with pytest.raises(ValueError, match="source_ratio key 'youtube' names 'youtube', not a source"):
        m.sample(4, rng, source_ratio={"youtube": 0.5})
    with pytest.raises(ValueError, match=r"asks for 12 > batch_size 10"):
        m.sample(10, rng, source_ratio={"demo": 0.6, "online": 0.6})
    with pytest.raises(ValueError, match=r"asked for 5 transitions from sources \['intervention'\]"):
        m.sample(10, rng, source_ratio={"intervention": 0.5})


def test_ring_buffer_drops_oldest_whole_episodes_and_wraps() -> None:
    m = hand_mirror(capacity=10)  # A (4 rows) + B (5 rows) = 9 rows
    m.add_episode(*episode(30, [1, 1, 1], terminal_end=True), source="prior")  # 4 rows: A goes, C wraps
    assert len(m) == 4 + 3 and m.steps_by_source() == {"demo": 0, "online": 4, "intervention": 0, "prior": 3}
    b = m.sample(500, np.random.default_rng(5), n_step=2, gamma=GAMMA, frame_stack=2)
    states = b["obs"]["state"][:, -1, 0]
    assert set(states.astype(int)) == {20, 21, 22, 23, 30, 31, 32}
    c = states >= 30  # C's rows sit at physical rows 9, 0, 1, 2: index arithmetic must wrap
    np.testing.assert_array_equal(b["next_obs"]["state"][c, -1, 0], np.minimum(states[c] + 2, 33))
    np.testing.assert_array_equal(b["obs"]["state"][c, 0, 0], np.maximum(states[c] - 1, 30))
    np.testing.assert_allclose(b["reward"][states == 30], 1.5)
    with pytest.raises(ValueError, match="does not fit in capacity_steps=10"):
        m.add_episode(*episode(50, [0.0] * 10, terminal_end=True))


def test_add_episode_rejects_bad_shapes() -> None:
    m = hand_mirror()
    obs, action, reward, terminal, truncated = episode(50, [1, 2], terminal_end=True)
    with pytest.raises(ValueError, match="reward has 3 values, expected T = 2"):
        m.add_episode(obs, action, np.zeros(3), terminal, truncated)
    with pytest.raises(ValueError, match=r"obs\['state'\] has 2 rows, expected T\+1 = 3"):
        m.add_episode({**obs, "state": obs["state"][:2]}, action, reward, terminal, truncated)
    with pytest.raises(ValueError, match=r"obs/cam has rows of \(2, 2, 3\) float32, expected \(2, 2, 3\) uint8"):
        m.add_episode({**obs, "cam": obs["cam"].astype(np.float32)}, action, reward, terminal, truncated)
    with pytest.raises(ValueError, match="only be set on an episode's last step"):
        m.add_episode(obs, action, reward, np.array([True, False]), truncated)
    with pytest.raises(ValueError, match="cannot sample from an empty mirror"):
        ReplayMirror(10).sample(1, np.random.default_rng(0))


def test_mirror_from_store_tails_and_relabels(tmp_path: Path) -> None:
    path = tmp_path / "s"
    w = EpisodeWriter(path, mc_gamma=GAMMA)
    for first, rewards, terminal_end, source in ((10, [1, 2, 3], True, "demo"), (20, [0, 0, 0, 1], False, "online")):
        obs, action, reward, terminal, truncated = episode(first, rewards, terminal_end)
        w.begin_episode(source=source)
        for t in range(len(reward)):
            w.add_step({k: v[t] for k, v in obs.items()}, action[t], reward[t], terminal[t], truncated[t],
                       intervened=INTERVENED.get(first + t, False))
        w.end_episode({k: v[-1] for k, v in obs.items()}, success=True)
        if first == 10:
            mirror = ReplayMirror.from_store(path)
            assert len(mirror) == 3 and mirror.tail() == 0
    assert mirror.tail() == 4 and len(mirror) == 7
    # The same hand values as the in-memory mirror: the store round-trips everything sampled.
    batch = mirror.sample(300, np.random.default_rng(6), n_step=2, gamma=GAMMA)
    for i, s in enumerate(batch["obs"]["state"][:, 0].astype(int)):
        assert (batch["reward"][i], batch["discount"][i]) == (pytest.approx(N2[s][0]), pytest.approx(N2[s][1]))
        assert batch["mc_return"][i] == pytest.approx(MC[s]) and batch["intervened"][i] == INTERVENED.get(s, False)
    # An open episode is not mirrored until it closes; state-only mirrors and relabelling on load.
    w.begin_episode()
    w.add_step({"state": np.zeros(2, np.float32), "cam": np.zeros((2, 2, 3), np.uint8)}, np.zeros(2), 0.0, False, False)
    w.flush()
    assert mirror.tail() == 0
    w.close()
    relabelled = ReplayMirror.from_store(path, obs_keys=("state",), reward_fn=lambda ep: np.ones_like(ep.reward))
    b = relabelled.sample(50, np.random.default_rng(7), n_step=1, gamma=GAMMA)
    assert set(b["obs"]) == set(b["next_obs"]) == {"state"}
    np.testing.assert_array_equal(b["reward"], 1.0)
    assert len(relabelled) == 7  # the still-open episode is not mirrored
    # A mirror at another discount (a learner's, at its agent's) recomputes the stored returns at its own.
    b = ReplayMirror.from_store(path, mc_gamma=0.25).sample(300, np.random.default_rng(8), n_step=1, gamma=0.25)
    at_quarter = {10: 1 + .25 * 2 + .0625 * 3, 11: 2 + .25 * 3, 12: 3.0, 20: 1 / 64, 21: 1 / 16, 22: .25, 23: 1.0}
    for i, s in enumerate(b["obs"]["state"][:, 0].astype(int)):
        assert b["mc_return"][i] == pytest.approx(at_quarter[s])
