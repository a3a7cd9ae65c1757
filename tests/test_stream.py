"""Journal -> link -> learner store: the learner's copy holds the actor's rows exactly once."""

import time

import numpy as np
import pytest

from dojo.link import LinkClient, LinkServer, create_keys
from dojo.replay.store import open_store, verify_store
from dojo.link.journal import StoreJournal, StoreSink


def record_episodes(journal, episodes: int, steps: int, rng, first: int = 0) -> None:
    for e in range(first, first + episodes):
        journal.begin_episode(source="online", task="t", instruction="do it", robot="twin")
        for t in range(steps):
            obs = {"state": rng.normal(size=5).astype(np.float32), "cam": rng.integers(0, 255, (8, 8, 3), np.uint8)}
            journal.add_step(obs, rng.uniform(-1, 1, 2), float(t == steps - 1), t == steps - 1, False,
                             intervened=t % 3 == 0)
        journal.end_episode({"state": np.zeros(5, np.float32), "cam": np.zeros((8, 8, 3), np.uint8)}, success=e % 2 == 0)


def assert_same_rows(a, b, prefix: bool = False) -> None:
    """Stores `a` and `b` hold the same rows and episodes; with `prefix`, `b` holds the first rows and
    episodes of `a` (each exactly once, none missing in between)."""
    ra, rb = verify_store(a), verify_store(b)
    n = rb.num_rows if prefix else ra.num_rows
    assert (ra.num_rows >= n if prefix else ra.num_rows == n) and rb.num_rows == n
    assert ra.num_episodes >= rb.num_episodes if prefix else ra.num_episodes == rb.num_episodes
    assert ra.obs_keys == rb.obs_keys
    for key in [f"obs/{k}" for k in ra.obs_keys] + ["action", "reward", "terminal", "truncated", "intervened"]:
        np.testing.assert_array_equal(ra.read(key)[:n], rb.read(key), err_msg=key)
    if not prefix:  # an open episode's returns are known only when it closes
        np.testing.assert_array_equal(ra.read("mc_return"), rb.read("mc_return"))
    for ea, eb in zip(ra.episodes, rb.episodes):
        assert ea == eb


def wait_for(cond, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def stream(tmp_path, journal, record) -> None:
    """Serve a learner-side sink, run `record()` on the journal, and wait until the learner acked it all."""
    keys = create_keys(tmp_path / "run") if not (tmp_path / "run" / "keys").exists() else tmp_path / "run" / "keys"
    sink = StoreSink(tmp_path / "learner.zarr")
    server = LinkServer(lambda actor, first, steps: sink.on_steps(first, steps), keys, port=0).start()
    client = LinkClient(journal, server.address, keys, heartbeat_s=0.1, timeout_s=1.0)
    try:
        record()
        journal.flush()
        wait_for(lambda: client.status().acked_seq == journal.last_seq())
    finally:
        client.close()
        server.close()
        sink.close()
        journal.close()


def test_journal_streams_identical_rows(tmp_path):
    journal = StoreJournal(tmp_path / "journal.zarr", memory_steps=10)
    stream(tmp_path, journal, lambda: record_episodes(journal, 6, 7, np.random.default_rng(0)))
    assert journal.last_seq() == 6 * 8
    assert_same_rows(tmp_path / "journal.zarr", tmp_path / "learner.zarr")


def test_restarted_actor_resends_from_its_store_and_closes_the_cut_episode(tmp_path):
    rng = np.random.default_rng(1)
    # The actor records while no learner is up, and "dies" mid-episode (journal closed, episode open).
    journal = StoreJournal(tmp_path / "journal.zarr")
    record_episodes(journal, 2, 5, rng)
    journal.begin_episode(source="online", task="t")
    for t in range(3):
        journal.add_step({"state": np.ones(5, np.float32), "cam": np.ones((8, 8, 3), np.uint8)},
                         np.zeros(2), 0.0, False, False)
    journal.close()
    # A new actor process reopens the journal (closing the cut episode) and meets the learner.
    journal = StoreJournal(tmp_path / "journal.zarr", memory_steps=4)
    assert open_store(tmp_path / "journal.zarr").episodes[-1].finished is False
    stream(tmp_path, journal, lambda: record_episodes(journal, 2, 4, rng))
    assert_same_rows(tmp_path / "journal.zarr", tmp_path / "learner.zarr")


def test_failed_store_call_leaves_nothing_uncommitted(tmp_path):
    sink = StoreSink(tmp_path / "learner.zarr")
    step = {"obs/state": np.zeros(3, np.float32), "action": np.zeros(2, np.float32), "reward": 0.0,
            "terminal": False, "truncated": False, "intervened": False, "final": False}
    begin = {**step, "meta/source": "online"}
    sink.on_steps(1, [begin, step])
    # A new episode begins (closing the open one) and then a bad step fails the whole call.
    with pytest.raises(ValueError, match="action must be finite and in"):
        sink.on_steps(3, [begin, {**step, "action": np.full(2, 5.0, np.float32)}])
    assert sink.last_seq == 2 and open_store(tmp_path / "learner.zarr").open_episode is not None
    sink.on_steps(3, [begin, step])  # the resend goes through
    sink.close()
    reader = verify_store(tmp_path / "learner.zarr")
    assert reader.num_rows == 4 and [e.finished for e in reader.episodes] == [False]
