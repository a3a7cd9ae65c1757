"""The language encoder (dojo/policies/language.py) on tiny models built from a config (dojo/sim/tiny_language.py,
dojo/sim/tiny_vlm.py): loads from a local folder only, caches per instruction, names its model."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from dojo.policies.language import load_language_encoder
from dojo.sim.multitask import INSTRUCTIONS
from dojo.sim.tiny_language import build_tiny_language_encoder

SCENE = list(INSTRUCTIONS.values())


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_language_encoder(tmp_path_factory.mktemp("lang") / "tiny-bert", dim=32, seed=0)


def test_tiny_encoder_loads_from_a_folder_and_embeds_each_instruction(tiny_folder):
    enc = load_language_encoder(tiny_folder)
    assert enc.dim == 32 and enc.kind == "sentence" and enc.pooling == "mean"
    x = enc.encode(SCENE)
    assert x.shape == (6, 32) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    # Every scene instruction is its own vector (none falls into [UNK] only).
    gram = x @ x.T
    assert np.all(gram[~np.eye(6, dtype=bool)] < 1.0 - 1e-4)
    tokens = enc._tokenizer.tokenize("put the blue cube on the blue pad.")
    assert "[UNK]" not in tokens


def test_a_known_instruction_is_not_embedded_again(tiny_folder):
    enc = load_language_encoder(tiny_folder)
    first = enc.encode(SCENE[:2])
    assert enc.forward_passes == 1
    again = enc.encode([SCENE[1], SCENE[0], SCENE[1]])
    assert enc.forward_passes == 1  # all three from the cache
    np.testing.assert_array_equal(again, first[[1, 0, 1]])
    mixed = enc.encode([SCENE[0], SCENE[2]])  # one new: one forward pass, of that one only
    assert enc.forward_passes == 2
    # A batch's padding does not change a vector: embedded alone or beside a longer one, the same.
    alone = load_language_encoder(tiny_folder).encode([SCENE[2]])
    np.testing.assert_allclose(mixed[1], alone[0], atol=1e-5)
    np.testing.assert_array_equal(mixed[0], first[0])
    assert enc.encode([]).shape == (0, 32)


def test_the_id_names_the_model_not_the_path(tiny_folder, tmp_path):
    enc = load_language_encoder(tiny_folder)
    assert enc.id == f"tiny-bert-{enc.fingerprint}"
    copy = shutil.copytree(tiny_folder, tmp_path / "elsewhere")
    assert load_language_encoder(copy).fingerprint == enc.fingerprint
    same_seed = build_tiny_language_encoder(tmp_path / "rebuilt", dim=32, seed=0)
    assert load_language_encoder(same_seed).fingerprint == enc.fingerprint
    other = load_language_encoder(build_tiny_language_encoder(tmp_path / "seed1", dim=32, seed=1))
    assert other.fingerprint != enc.fingerprint
    assert not np.allclose(other.encode(SCENE[:1]), enc.encode(SCENE[:1]))


def test_a_clip_text_tower_loads_from_a_clip_folder(tmp_path):
    from dojo.sim.tiny_vlm import build_tiny_contrastive

    folder = build_tiny_contrastive(tmp_path / "clip", family="clip", hidden_size=32, extra_text=SCENE)
    enc = load_language_encoder(folder)
    assert enc.kind == "clip" and enc.dim == 32
    x = enc.encode(SCENE)
    assert x.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)


def test_a_hub_id_or_a_bare_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(NotADirectoryError, match="not a local folder.*nothing is downloaded") as err:
        load_language_encoder("sentence-transformers/all-MiniLM-L6-v2")
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_language_encoder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="does not load as a transformers model") as err:
        load_language_encoder(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="sequence of instructions"):
        load_language_encoder(build_tiny_language_encoder(tmp_path / "tiny")).encode("pick up the red cube")


def test_dojo_policies_import_without_torch():
    code = ("import sys, dojo.policies.language, dojo.policies.generalist; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
