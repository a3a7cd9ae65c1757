"""Labelled frame sets from hand-built stores: outcomes, operator marks, RoboFuME's skipped frames, splits."""

from __future__ import annotations

import numpy as np
import pytest

from dojo.replay.store import EpisodeWriter, relabel_rewards
from dojo.rewards.labels import LabelRules, LabelSet, build_labels, episode_labels

H = W = 8


def frame(row: int) -> dict:
    """Every row's pixels hold its row index, so a test can tell which row a frame came from."""
    return {"front": np.full((H, W, 3), row % 251, np.uint8), "state": np.full(3, row, np.float32)}


def write_episode(writer: EpisodeWriter, rewards: list[float], success: bool, instruction: str = "pick") -> None:
    writer.begin_episode(source="demo", task="pick_cube", instruction=instruction)
    for t, r in enumerate(rewards):
        row = writer.num_rows
        writer.add_step(frame(row), np.zeros(4), r, terminal=False, truncated=t == len(rewards) - 1)
    writer.end_episode(frame(writer.num_rows), success=success)


def test_episode_labels_by_hand():
    rules = LabelRules(final_frames=1, marks="reward", skip_before_success=2)
    # 6 rows; step 3 reaches success (reward 1) so rows 4 and 5 are success frames; rows 2 and 3 precede it.
    got = episode_labels(6, success=True, reward=np.array([0, 0, 0, 1, 1], np.float32), rules=rules)
    np.testing.assert_array_equal(got, [0, 0, -1, -1, 1, 1])
    # Only the outcome: the final frame is positive, the two before it left out.
    got = episode_labels(6, True, np.zeros(5), LabelRules(marks="none", skip_before_success=2))
    np.testing.assert_array_equal(got, [0, 0, 0, -1, -1, 1])
    # A failed episode in which the operator marked a success that was lost again (a dropped cube).
    got = episode_labels(8, False, np.array([0, 0, 1, 1, 0, 0, 0], np.float32), rules)
    np.testing.assert_array_equal(got, [0, -1, -1, 1, 1, 0, 0, 0])
    # Marks switched off by the caller (rewards a model wrote): all negatives.
    np.testing.assert_array_equal(episode_labels(4, False, np.ones(3), rules, use_marks=False), [0, 0, 0, 0])


def test_label_rules_refuse_bad_values():
    with pytest.raises(ValueError, match="marks must be one of"):
        LabelRules(marks="button")
    with pytest.raises(ValueError, match="skip_before_success"):
        LabelRules(skip_before_success=-1)


def test_build_labels_from_stores(tmp_path):
    store = tmp_path / "s.zarr"
    with EpisodeWriter(store) as w:
        write_episode(w, [0, 0, 0, 0, 0, 0, 1, 1], success=True)  # rows 0..8, success frames 7, 8
        write_episode(w, [0] * 5, success=False)  # rows 9..14
    labels = build_labels([store], LabelRules(skip_before_success=3))
    positives = labels.row[labels.label == 1]
    negatives = labels.row[labels.label == 0]
    np.testing.assert_array_equal(positives, [7, 8])
    np.testing.assert_array_equal(negatives, [0, 1, 2, 3, 9, 10, 11, 12, 13, 14])  # 4, 5, 6 left out
    assert labels.counts["skipped_near_success"] == 3
    assert labels.instructions == ["pick"]

    # Read back from the store by row: each frame's pixels name its row.
    frames = labels.frames(["front"])["front"]
    np.testing.assert_array_equal(frames[:, 0, 0, 0], labels.row % 251)

    path = tmp_path / "labels.npz"
    labels.save(path)
    again = LabelSet.load(path)
    np.testing.assert_array_equal(again.row, labels.row)
    np.testing.assert_array_equal(again.label, labels.label)
    assert again.summary() == labels.summary()


def test_rewards_written_by_a_model_are_not_marks(tmp_path):
    store = tmp_path / "s.zarr"
    with EpisodeWriter(store) as w:
        write_episode(w, [0, 0, 0, 0], success=False)
    relabel_rewards(store, lambda ep: np.ones_like(ep.reward), reward_source="classifier:abc123")
    labels = build_labels([store])
    assert labels.positives == 0 and labels.negatives == 5
    assert labels.counts["episodes_with_model_rewards"] == 1


def test_split_keeps_episodes_whole_and_both_classes_on_each_side(tmp_path):
    store = tmp_path / "s.zarr"
    with EpisodeWriter(store) as w:
        for i in range(10):
            write_episode(w, [0, 0, 0, 1] if i % 2 else [0, 0, 0, 0], success=bool(i % 2))
    labels = build_labels([store], LabelRules(skip_before_success=0))
    train, held = labels.split(0.2, seed=3)
    assert set(train.episode.tolist()).isdisjoint(held.episode.tolist())
    assert len(train) + len(held) == len(labels)
    for side in (train, held):
        assert side.positives > 0 and side.negatives > 0
    assert len(set(held.episode.tolist())) == 2  # 20 % of 10 episodes, one with and one without success


def test_frames_refuses_a_rebuilt_store(tmp_path):
    import shutil

    store = tmp_path / "s.zarr"
    with EpisodeWriter(store) as w:
        write_episode(w, [0, 1], success=True)
    labels = build_labels([store])
    shutil.rmtree(store)
    with EpisodeWriter(store) as w:
        write_episode(w, [0, 1], success=True)
    with pytest.raises(ValueError, match="rebuild the labels"):
        labels.frames(["front"])
