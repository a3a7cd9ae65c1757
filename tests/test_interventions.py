"""Interventions: RLIF relabelling, HIL-SERL's intervention copies, and flags recorded by a practising actor."""

import numpy as np

from dojo.link import LinkClient, LinkServer, create_keys
from dojo.replay.sampler import ReplayMirror, intervened_runs
from dojo.replay.store import EpisodeWriter, open_store
from dojo.link.journal import StoreJournal, StoreSink
from dojo.policies.spaces import CanonicalEnv
from dojo.rewards.interventions import count_interventions, rlif_reward
from dojo.robot.actor import Actor, ActorConfig
from dojo.sim import make_env
from dojo.sim.operators import make_operator


def test_rlif_reward_marks_the_step_before_each_takeover():
    flags = np.array([0, 0, 1, 1, 0, 1, 0, 0], bool)
    np.testing.assert_array_equal(rlif_reward(flags), [0, -1, 0, 0, -1, 0, 0, 0])
    assert rlif_reward(np.array([1, 1, 0], bool)).tolist() == [0, 0, 0]  # taken over from the start: no policy step
    assert count_interventions(flags) == 2 and count_interventions(np.array([1, 0, 1], bool)) == 2
    assert intervened_runs(flags) == [(2, 4), (5, 6)]


def write_episode(path, intervened, reward, source="online", terminal_last=True):
    T = len(intervened)
    with EpisodeWriter(path) as writer:
        writer.begin_episode(source=source)
        for t in range(T):
            writer.add_step({"state": np.array([t], np.float32)}, np.array([t / T], np.float32), reward[t],
                            terminal_last and t == T - 1, not terminal_last and t == T - 1, intervened=intervened[t])
        writer.end_episode({"state": np.array([T], np.float32)}, success=terminal_last)


def test_hil_serl_copies_intervened_runs_as_demonstrations(tmp_path):
    """The operator's corrections join the demo source, which symmetric sampling and the BC term draw on."""
    intervened = [False, True, True, False, False, True]
    write_episode(tmp_path / "s.zarr", intervened, [0, 0, 0, 0, 0, 1])
    mirror = ReplayMirror()
    mirror.follow(tmp_path / "s.zarr", copy_interventions=False)
    assert mirror.steps_by_source()["demo"] == 0
    mirror = ReplayMirror()
    mirror.follow(tmp_path / "s.zarr", copy_interventions=True)
    assert mirror.steps_by_source() == {"demo": 3, "online": 6, "intervention": 0, "prior": 0}
    batch = mirror.sample(64, np.random.default_rng(0), source_ratio={"demo": 0.5})
    from_copies = batch["source"] == 0
    assert from_copies.sum() == 32
    # The copies are steps 1, 2 (cut when the operator handed back: discount kept, next obs is o_3) and 5 (terminal).
    t = batch["obs"]["state"][from_copies, 0]
    assert set(t.tolist()) <= {1.0, 2.0, 5.0}
    nxt = batch["next_obs"]["state"][from_copies, 0]
    np.testing.assert_array_equal(nxt, t + 1)
    np.testing.assert_allclose(batch["discount"][from_copies], np.where(t == 5.0, 0.0, 0.99))
    # Monte-Carlo returns of the copies are those of the whole episode, not of the cut-off piece.
    np.testing.assert_allclose(batch["mc_return"][from_copies], 0.99 ** (5 - t), rtol=1e-6)


def test_imitating_successes_copies_each_successful_episode_whole_as_a_demonstration(tmp_path):
    """learner.imitate_successes: a successful practice episode joins the demos whole; a failed one does not."""
    write_episode(tmp_path / "win.zarr", [False] * 4, [0, 0, 0, 1])
    write_episode(tmp_path / "lose.zarr", [False] * 3, [0, 0, 0], terminal_last=False)
    mirror = ReplayMirror()
    for name in ("win", "lose"):
        mirror.follow(tmp_path / f"{name}.zarr", copy_successes=True)
    assert mirror.steps_by_source() == {"demo": 4, "online": 7, "intervention": 0, "prior": 0}
    batch = mirror.sample(64, np.random.default_rng(0), source_ratio={"demo": 0.5})
    copies = batch["source"] == 0
    assert copies.sum() == 32
    np.testing.assert_allclose(batch["discount"][copies], np.where(batch["obs"]["state"][copies, 0] == 3, 0.0, 0.99))
    np.testing.assert_allclose(batch["mc_return"][copies], 0.99 ** (3 - batch["obs"]["state"][copies, 0]), rtol=1e-6)
    mirror = ReplayMirror()
    mirror.follow(tmp_path / "win.zarr")
    assert mirror.steps_by_source()["demo"] == 0


def test_rlif_relabels_on_load_without_touching_the_store(tmp_path):
    intervened = [False, False, True, False]
    write_episode(tmp_path / "s.zarr", intervened, [0, 0, 0, 1])
    mirror = ReplayMirror()
    mirror.follow(tmp_path / "s.zarr", reward_fn=lambda ep: rlif_reward(ep.intervened))
    batch = mirror.sample(256, np.random.default_rng(0))
    t = batch["obs"]["state"][:, 0].astype(int)
    np.testing.assert_array_equal(batch["reward"], np.where(t == 1, -1.0, 0.0))
    assert open_store(tmp_path / "s.zarr").episode(0).reward.tolist() == [0, 0, 0, 1]


def test_practising_actor_records_who_acted(tmp_path):
    """An intervening sim operator watches a random policy; the learner's store gets the executed actions
    and intervened flags, and the counts the actor reports."""
    keys = create_keys(tmp_path / "run")
    sink = StoreSink(tmp_path / "learner.zarr")
    server = LinkServer(lambda actor, first, steps: sink.on_steps(first, steps), keys, port=0).start()
    env = CanonicalEnv(make_env("pick_cube", max_episode_steps=40))
    env.unwrapped.teleop = make_operator(env.unwrapped, mode="intervening", rule="deviation", takeover_steps=5,
                                         seed=0)
    journal = StoreJournal(tmp_path / "journal.zarr")
    actor = Actor(env, journal, ActorConfig(random_steps=10_000), client=LinkClient(journal, server.address, keys))
    try:
        result = actor.run(max_steps=120)
    finally:
        actor.close()
        server.close()
        sink.close()
    store = open_store(tmp_path / "learner.zarr")
    episodes = [store.episode(i) for i in range(store.num_episodes)]
    assert result["interventions"] > 0
    # Every episode the actor finished is in the learner's store with the takeovers it counted.
    assert sum(count_interventions(e.intervened) for e in episodes) == result["interventions"]
    for e in episodes:  # each takeover lasts takeover_steps (or until the episode ended)
        runs = intervened_runs(e.intervened)
        assert all(b - a == 5 or b == len(e.intervened) for a, b in runs)
