"""The learner's reward service (reward.serve=learner) over the real authenticated link on loopback: labels equal
the model's own verdict, bad frames and a different model are named, and a label later than the deadline is
missed: the twin's episode goes on with reward 0, the step flagged and the episode's count stored."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dojo.launch.build import make_env, serve_reward
from dojo.launch.cmd_train import train_config
from dojo.launch.config import ConfigError
from dojo.link import LinkClient, LinkServer, MemoryJournal, StoreJournal, StoreSink, create_keys
from dojo.replay.store import StoreReader
from dojo.rewards.classifier import ClassifierConfig, train_classifier
from dojo.rewards.service import RemoteReward, RewardService
from dojo.sim.experts import make_expert

SIZE = 32
FAST = {"heartbeat_s": 0.1, "timeout_s": 1.0}


@pytest.fixture(scope="module")
def model():
    """A front-camera classifier on 32x32 frames: bright frames are successes."""
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2 == 0
    frames = rng.integers(0, 60, (64, SIZE, SIZE, 3), dtype=np.uint8)
    frames[labels] += 150
    return train_classifier({"front": frames}, labels, {"front": frames}, labels,
                            ClassifierConfig(cameras=("front",), steps=30), progress=False)


def saved(model, folder, threshold: float):
    model.manifest = dataclasses.replace(model.manifest, threshold=threshold)
    model.save(folder)
    return str(folder)


@pytest.fixture
def link(tmp_path, model):
    """A learner link serving `model` and one actor's client, both real, on loopback."""
    keys = create_keys(tmp_path / "run", ["actor-0"])
    service = RewardService(model)
    with LinkServer(lambda *a: None, keys, port=0, scorer=service, **FAST).start() as server, \
            LinkClient(MemoryJournal(), server.address, keys, "actor-0", **FAST) as client:
        yield service, server, client
    service.close()


def test_labels_are_the_models_own_verdict(link, model):
    service, server, client = link
    remote = RemoteReward(client, deadline_s=30.0, expect_source=model.reward_source)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    scores, success = model.verdict({"front": frames})
    for i in range(len(frames)):
        score, ok = remote.label({"front": frames[i]})
        assert score == pytest.approx(float(scores[i]), abs=1e-6) and ok == bool(success[i])
    assert remote.summary()["reward_labels"] == 6 and remote.missed == 0
    assert service.labels == 6 and server.stats()["score_requests"] == 6


def test_bad_frames_and_another_model_are_named(link, model):
    _, _, client = link
    with pytest.raises(ValueError, match=r"refused the frames: .*16x16 pixels, expected 32x32"):
        RemoteReward(client, 30.0).label({"front": np.zeros((16, 16, 3), np.uint8)})
    with pytest.raises(ValueError, match="reward service runs classifier:.*this actor's reward.model is vlm:x:v1"):
        RemoteReward(client, 30.0, expect_source="vlm:x:v1").label({"front": np.zeros((SIZE, SIZE, 3), np.uint8)})


def test_a_learner_without_a_reward_model_says_so(tmp_path):
    keys = create_keys(tmp_path / "run", ["actor-0"])
    with LinkServer(lambda *a: None, keys, port=0, **FAST).start() as server, \
            LinkClient(MemoryJournal(), server.address, keys, "actor-0", **FAST) as client:
        with pytest.raises(ValueError, match="this learner serves no reward model"):
            RemoteReward(client, 30.0).label({"front": np.zeros((SIZE, SIZE, 3), np.uint8)})


def served_env(model_dir: str, every: int, deadline_s: float):
    return make_env(train_config(["task=pick_cube", "env.obs_mode=state", "env.max_episode_steps=7",
                                  "reward.source=classifier", f"reward.model={model_dir}", "reward.serve=learner",
                                  f"reward.every={every}", f"reward.deadline_s={deadline_s}"]))


def run_episode(env, journal) -> list[dict]:
    """An expert episode on the served env, journaled as the actor does; returns each step's (reward, flags)."""
    expert = make_expert(env.unwrapped)
    obs, _ = env.reset(seed=0)
    journal.begin_episode(task="pick_cube", reward_source=env.unwrapped.task.reward_source)
    out, missed = [], 0
    while True:
        next_obs, reward, terminated, truncated, info = env.step(expert())
        journal.add_step(obs, info["executed_action"], reward, terminated, truncated)
        out.append({"reward": reward, "terminated": terminated, "missed": info["reward_missed"]})
        missed += info["reward_missed"]
        obs = next_obs
        if terminated or truncated:
            journal.end_episode(obs, info["success"], reward_missed=missed)
            return out


def test_late_labels_are_missed_the_episode_goes_on_and_the_store_counts_them(tmp_path, model):
    """A classifier that always says success, behind a deadline no label can meet: every asked-for label (steps
    3, 6 and the last, 7) is missed, the episode runs its 7 steps with reward 0, and the count reaches the
    learner's store through the journal and the link. With a generous deadline the first label (step 3) ends
    the episode as a success."""
    always = saved(model, tmp_path / "always", threshold=0.0)
    keys = create_keys(tmp_path / "run", ["actor-0"])
    sink = StoreSink(tmp_path / "learner.zarr")
    service = RewardService(model)
    with LinkServer(lambda actor, first, steps: sink.on_steps(first, steps), keys, port=0, scorer=service,
                    **FAST).start() as server:
        env = served_env(always, every=3, deadline_s=1e-4)
        journal = StoreJournal(tmp_path / "journal.zarr")
        client = LinkClient(journal, server.address, keys, "actor-0", **FAST)
        serve_reward(env, client)
        steps = run_episode(env, journal)
        assert [s["missed"] for s in steps] == [False, False, True, False, False, True, True]
        assert all(s["reward"] == 0.0 and not s["terminated"] for s in steps)

        env.unwrapped.task.remote.deadline_s = 30.0
        steps = run_episode(env, journal)
        assert [s["reward"] for s in steps] == [0.0, 0.0, 1.0] and steps[-1]["terminated"]
        assert not any(s["missed"] for s in steps)
        journal.flush()
        from tests.test_link import wait_for

        wait_for(lambda: client.status().acked_seq == journal.committed_seq, what="the journal acknowledged")
        client.close()
        journal.close()
        env.close()
    service.close()
    sink.close()
    episodes = StoreReader(tmp_path / "learner.zarr").episodes
    assert [e.reward_missed for e in episodes] == [3, 0]
    assert [e.success for e in episodes] == [False, True]
    assert {e.reward_source for e in episodes} == {model.reward_source}


def test_a_served_model_without_a_link_is_named(tmp_path, model):
    env = served_env(saved(model, tmp_path / "m", 0.5), every=1, deadline_s=1.0)
    with pytest.raises(ValueError, match="runs in the learner, and this env has no link"):
        env.reset(seed=0)
    env.close()


@pytest.mark.parametrize("overrides, words", [
    (["reward.serve=gpu"], "reward.serve must be one of ['auto', 'actor', 'learner'], got 'gpu'"),
    (["reward.every=0"], "reward.every must be an integer >= 1, got 0"),
    (["reward.deadline_s=0"], "reward.deadline_s must be a number > 0, got 0"),
    (["reward.serve=learner"], "reward.serve=learner serves a reward model, but reward.source='' reads none"),
])
def test_bad_service_settings_name_the_value(overrides, words):
    with pytest.raises(ConfigError) as err:
        train_config(["task=pick_cube", *overrides])
    assert words in str(err.value)
