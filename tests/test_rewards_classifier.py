"""The flax success classifier and the RewardModel interface: learning, threshold choice, save/load, checks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dojo.rewards.base import Manifest, StateCheck, load_reward_model, read_manifest
from dojo.rewards.classifier import ClassifierConfig, SuccessClassifier, export_pretrained_trunk, train_classifier
from dojo.rewards.metrics import binary_metrics, choose_threshold

SIZE = 32  # the smallest side the DrQ trunk (3 stride-2 convs, one stride-1, no padding) takes


def separable_frames(labels: np.ndarray, seed: int) -> dict:
    """Noise, plus a bright red square on success frames: a trivially separable set."""
    rng = np.random.default_rng(seed)
    front = rng.integers(0, 120, (len(labels), SIZE, SIZE, 3), dtype=np.uint8)
    front[labels, 8:24, 8:24] = (255, 0, 0)
    return {"front": front}


@pytest.fixture(scope="module")
def trained():
    labels = np.random.default_rng(0).random(600) < 0.25
    held = np.random.default_rng(1).random(200) < 0.25
    model = train_classifier(separable_frames(labels, 0), labels, separable_frames(held, 1), held,
                             ClassifierConfig(cameras=("front",)), instructions=("pick up the red cube",),
                             progress=False)
    return model


def test_classifier_learns_a_separable_set(trained):
    test = np.random.default_rng(2).random(200) < 0.3
    success = trained.success(separable_frames(test, 2))
    metrics = binary_metrics(success, test)
    assert metrics["accuracy"] == 1.0, metrics
    assert trained.manifest.metrics["holdout_false_positive_rate"] == 0.0
    assert 0.5 <= trained.threshold < 1.0


def test_choose_threshold_by_hand():
    negatives = np.array([0.05, 0.1, 0.2, 0.3, 0.55, 0.6, 0.7, 0.8, 0.9, 0.95])
    # 10 % of 10 negatives: one may pass, so the threshold sits just above the second highest (0.9).
    t = choose_threshold(negatives, 0.1)
    assert 0.9 < t < 0.9 + 1e-12 and np.sum(negatives >= t) == 1
    # 0 %: above the highest.
    assert 0.95 < choose_threshold(negatives, 0.0) < 0.95 + 1e-12
    # 60 %: six may pass, so just above the 7th highest (0.3); but the threshold never goes below 0.5.
    assert choose_threshold(negatives, 0.6) == 0.5
    # Ties: two negatives at 0.9 and one allowed: both must fall under it.
    assert np.sum(np.array([0.9, 0.9, 0.1]) >= choose_threshold(np.array([0.9, 0.9, 0.1]), 0.34)) == 0
    with pytest.raises(ValueError, match="held-out negatives"):
        choose_threshold(np.array([]), 0.01)


def test_save_load_scores_alike_and_versions(trained, tmp_path):
    frames = separable_frames(np.array([True, False, True]), 5)
    manifest = trained.save(tmp_path / "m")
    again = load_reward_model(tmp_path / "m")
    np.testing.assert_allclose(again.score(frames), trained.score(frames), rtol=1e-6)
    assert again.reward_source == f"classifier:{manifest.id}:v1" and manifest.version == 1
    assert again.manifest.image_size == (SIZE, SIZE) and again.manifest.inputs == ("front",)
    # The same content saved again: same id, next version. A new threshold is new content: new id.
    assert trained.save(tmp_path / "m").id == manifest.id
    assert read_manifest(tmp_path / "m").version == 2
    trained.manifest = dataclasses.replace(trained.manifest, threshold=0.9)
    assert trained.save(tmp_path / "m2").id != manifest.id


def test_success_ands_the_state_check(trained):
    frames = separable_frames(np.array([True, True, False]), 6)
    checked = SuccessClassifier(dataclasses.replace(trained.manifest, state_check=(StateCheck.parse("1:0.5:"),)),
                                trained.params)
    state = np.array([[0, 1.0], [0, 0.0], [0, 1.0]], np.float32)
    np.testing.assert_array_equal(checked.success(frames, state=state), [True, False, False])
    with pytest.raises(ValueError, match="pass state="):
        checked.success(frames)
    with pytest.raises(ValueError, match="INDEX:MIN:MAX"):
        StateCheck.parse("gripper<0.04")


def test_inputs_are_checked(trained):
    good = separable_frames(np.array([True]), 7)["front"]
    with pytest.raises(ValueError, match="'front' is missing"):
        trained.score({"wrist": good})
    with pytest.raises(ValueError, match="expected 32x32"):
        trained.score({"front": np.zeros((1, 64, 64, 3), np.uint8)})
    with pytest.raises(ValueError, match="must be uint8"):
        trained.score({"front": good.astype(np.float32)})
    with pytest.raises(ValueError, match="not one this classifier was trained for"):
        trained.score({"front": good}, "open the drawer")
    assert trained.score({"front": good[0]}).shape == (1,)  # one unbatched frame


def test_frozen_pretrained_trunk_from_a_file(trained, tmp_path):
    path = tmp_path / "trunk.msgpack"
    export_pretrained_trunk(trained, "front", path)
    labels = np.random.default_rng(3).random(200) < 0.3
    config = ClassifierConfig(cameras=("front",), pretrained_encoder=str(path), steps=50)
    model = train_classifier(separable_frames(labels, 3), labels, separable_frames(labels, 4), labels, config,
                             progress=False)
    before = trained.params["params"]["encoder"]["trunk_front"]
    after = model.params["params"]["encoder"]["trunk_front"]
    # Loaded from the file and frozen: after training it still equals the exported trunk.
    np.testing.assert_array_equal(np.concatenate([np.ravel(x) for x in _leaves(before)]),
                                  np.concatenate([np.ravel(x) for x in _leaves(after)]))


def _leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_a_hub_id_gives_the_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download google/paligemma-3b-pt-224"):
        load_reward_model("google/paligemma-3b-pt-224")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_reward_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        load_reward_model(tmp_path / "empty")


def test_manifest_is_checked(tmp_path):
    with pytest.raises(ValueError, match="kind 'magic' is unknown"):
        Manifest(kind="magic", inputs=("front",), image_size=None, threshold=0.5)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        read_manifest(tmp_path / "m")
