"""VLM rewards offline: tiny PaliGemma / SigLIP / CLIP folders built from a config score, LoRA-train, save and reload
without any download; a hub id is refused with how to fetch it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from dojo.rewards.base import load_reward_model  # noqa: E402
from dojo.rewards.vlm import ContrastiveScorer, LoraSettings, VLMClassifier, VLMLabeller, train_vlm  # noqa: E402
from dojo.sim.tiny_vlm import build_tiny_contrastive, build_tiny_paligemma  # noqa: E402

INSTRUCTION = "pick up the red cube"


def separable_frames(labels: np.ndarray, seed: int) -> dict:
    """Two cameras of noise; a success frame has a red square in both (resized inside to the tower's 32 px)."""
    rng = np.random.default_rng(seed)
    out = {}
    for cam in ("front", "wrist"):
        images = rng.integers(0, 120, (len(labels), 48, 48, 3), dtype=np.uint8)
        images[labels, 8:40, 8:40] = (255, 0, 0)
        out[cam] = images
    return out


@pytest.fixture(scope="module")
def paligemma(tmp_path_factory):
    return build_tiny_paligemma(tmp_path_factory.mktemp("vlm") / "paligemma")


def test_tiny_vlm_scores_lora_trains_and_reloads(paligemma, tmp_path):
    model = VLMClassifier.zero_shot(paligemma, ("front", "wrist"), (INSTRUCTION,))
    labels = np.random.default_rng(0).random(64) < 0.5
    frames = separable_frames(labels, 0)
    assert model.score({k: v[:4] for k, v in frames.items()}, INSTRUCTION).shape == (4,)  # both cameras in one prompt
    model = VLMClassifier.zero_shot(paligemma, ("front",), (INSTRUCTION,))  # one camera: half the training time
    frames = {"front": frames["front"]}
    before = model.score({k: v[:4] for k, v in frames.items()}, INSTRUCTION)
    assert before.shape == (4,) and np.all((before > 0) & (before < 1))

    held = np.random.default_rng(1).random(32) < 0.5
    held_frames = {"front": separable_frames(held, 1)["front"]}
    # A third of the default 300 steps: enough for the tiny model to separate the red square (measured: held-out
    # accuracy 1.0 at 100 steps), and a third of the time.
    model = train_vlm(model, frames, labels, np.zeros(64, int), [INSTRUCTION], held_frames, held, np.zeros(32, int),
                      LoraSettings(steps=100), progress=False)
    assert model.manifest.metrics["holdout_accuracy"] >= 0.9, model.manifest.metrics
    manifest = model.save(tmp_path / "vlm")
    assert (tmp_path / "vlm" / "adapter" / "adapter_config.json").is_file()

    again = load_reward_model(tmp_path / "vlm")
    assert again.reward_source == f"vlm:{manifest.id}:v{manifest.version}"
    sample = {k: v[:8] for k, v in held_frames.items()}
    np.testing.assert_allclose(again.score(sample, INSTRUCTION), model.score(sample, INSTRUCTION), atol=1e-5)
    np.testing.assert_array_equal(again.success(sample), again.score(sample) >= manifest.threshold)


def test_reload_refuses_a_changed_base(paligemma, tmp_path):
    base = build_tiny_paligemma(tmp_path / "base")
    VLMClassifier.zero_shot(base, ("front",), (INSTRUCTION,)).save(tmp_path / "zero")
    build_tiny_paligemma(tmp_path / "base", hidden_size=48)  # another model in the same folder
    with pytest.raises(ValueError, match="is not the one"):
        load_reward_model(tmp_path / "zero")


def test_vlm_labeller_answers_0_1_or_unsure(paligemma):
    labeller = VLMLabeller(paligemma, cameras=("front",), unsure_margin=0.0)
    frames = separable_frames(np.array([True, False, True, False]), 2)
    answers = labeller.compare({"front": frames["front"][:2]}, {"front": frames["front"][2:]}, INSTRUCTION)
    assert answers.shape == (2,) and set(answers.tolist()) <= {0, 1}
    assert set(VLMLabeller(paligemma, unsure_margin=0.49).compare(
        {"front": frames["front"][:2]}, {"front": frames["front"][2:]}, INSTRUCTION).tolist()) == {-1}


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_contrastive_zero_shot_scores_and_reloads(family, tmp_path):
    base = build_tiny_contrastive(tmp_path / family, family=family)
    scorer = ContrastiveScorer.zero_shot(base, ("front", "wrist"), (INSTRUCTION,))
    frames = separable_frames(np.array([True, False, False]), 3)
    scores = scorer.score(frames, INSTRUCTION)
    assert scores.shape == (3,) and np.all((scores > 0) & (scores < 1))
    manifest = scorer.save(tmp_path / "model")
    again = load_reward_model(tmp_path / "model")
    assert again.reward_source == f"contrastive:{manifest.id}:v{manifest.version}"
    np.testing.assert_allclose(again.score(frames, INSTRUCTION), scores, atol=1e-6)


def test_a_hub_id_is_refused_with_how_to_fetch_it():
    with pytest.raises(FileNotFoundError, match="huggingface-cli download google/paligemma-3b-pt-224 --local-dir"):
        VLMClassifier.zero_shot("google/paligemma-3b-pt-224", ("front",))
    with pytest.raises(FileNotFoundError, match="google/siglip-base-patch16-224.*not a local folder"):
        ContrastiveScorer.zero_shot("google/siglip-base-patch16-224", ("front",))


def test_a_model_without_prompt_support_is_refused(tmp_path):
    base = build_tiny_contrastive(tmp_path / "siglip")
    with pytest.raises(ValueError, match="dojo builds prompts for"):
        VLMClassifier.zero_shot(base, ("front",))
