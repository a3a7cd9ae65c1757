"""`dojo replay relabel` and the `dojo reward` commands on real stores: new rewards and reward_source, observations
byte-identical; label -> train -> eval -> relabel through the command line on the twin."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from dojo.launch.cli import main
from dojo.replay.store import EpisodeWriter, StoreReader, verify_store
from dojo.rewards.base import load_reward_model
from dojo.rewards.classifier import ClassifierConfig, train_classifier

SIZE = 32


def frame(lit: bool, row: int) -> dict:
    front = np.full((SIZE, SIZE, 3), row % 100, np.uint8)
    if lit:
        front[8:24, 8:24] = (255, 0, 0)
    return {"front": front, "state": np.array([row, 0.0], np.float32)}


def write_store(path, episodes: list[list[bool]]) -> None:
    """One episode per list: its frames, lit (a red square) or not."""
    with EpisodeWriter(path) as writer:
        for lit in episodes:
            writer.begin_episode(source="demo", task="pick_cube", instruction="pick up the red cube")
            for t in range(len(lit) - 1):
                writer.add_step(frame(lit[t], writer.num_rows), np.zeros(4), 0.0, False, t == len(lit) - 2)
            writer.end_episode(frame(lit[-1], writer.num_rows), success=lit[-1])


def file_hashes(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    labels = np.random.default_rng(0).random(200) < 0.5
    frames = {"front": np.stack([frame(bool(x), i)["front"] for i, x in enumerate(labels)])}
    model = train_classifier(frames, labels, frames, labels, ClassifierConfig(cameras=("front",), steps=300),
                             instructions=("pick up the red cube",), progress=False)
    folder = tmp_path_factory.mktemp("reward") / "classifier"
    model.save(folder)
    return folder


def test_relabel_writes_rewards_and_source_and_leaves_observations_alone(tmp_path, model_dir, capsys):
    store = tmp_path / "s.zarr"
    write_store(store, [[False, False, True, True], [False, False, False]])
    obs_before = file_hashes(store / "data" / "obs")
    assert main(["replay", "relabel", str(store), "--reward", str(model_dir)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = load_reward_model(model_dir)
    assert out["reward_source"] == model.reward_source and out["steps"] == 5

    assert file_hashes(store / "data" / "obs") == obs_before
    reader = verify_store(store)  # mc_return was recomputed to match the new rewards
    assert [e.reward_source for e in reader.episodes] == [model.reward_source] * 2
    first = reader.episode(0)
    expected = model.success({"front": first.obs["front"][1:]}).astype(np.float32)
    np.testing.assert_array_equal(first.reward, expected)
    np.testing.assert_array_equal(first.reward, [0.0, 1.0, 1.0])  # the verdict on the frame each step led to


def test_a_store_written_before_reward_source_reads_empty_and_gains_it(tmp_path):
    store = tmp_path / "old.zarr"
    write_store(store, [[False, True]])
    shutil.rmtree(store / "meta" / "reward_source")  # as a store from before the field existed
    assert StoreReader(store).episodes[0].reward_source == ""
    write_store(store, [[False, False, True]])  # the next writer adds the array
    assert (store / "meta" / "reward_source" / "zarr.json").is_file()
    assert [e.reward_source for e in verify_store(store).episodes] == ["", ""]


def test_reward_commands_end_to_end_on_the_twin(tmp_path, capsys):
    store = str(tmp_path / "pick.zarr")
    common = ["--sim", "pick_cube", "--obs-mode", "pixels", "--image-size", str(SIZE), "--out", store]
    assert main(["record", *common, "--episodes", "2", "--seed", "0"]) == 0
    assert main(["record", *common, "--episodes", "2", "--seed", "10", "--policy", "random",
                 "--max-episode-steps", "20"]) == 0
    capsys.readouterr()

    labels = str(tmp_path / "labels.npz")
    assert main(["reward", "label", store, "--out", labels]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["positives"] == 2 and summary["episodes"] == 4  # the two expert episodes' final frames

    model = str(tmp_path / "model")
    assert main(["reward", "train", "--kind", "classifier", "--labels", labels, "--steps", "20", "--out", model,
                 "--holdout-fraction", "0.5"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["reward_source"].startswith("classifier:") and trained["inputs"] == ["front", "wrist"]

    png = tmp_path / "worst.png"
    assert main(["reward", "eval", "--model", model, "--labels", labels, "--worst-png", str(png)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert "actual failure" in "\n".join(lines[:-1]) and png.is_file()
    c = result["confusion"]
    assert sum(c["actual_success"].values()) == summary["positives"]
    assert sum(c["actual_failure"].values()) == summary["negatives"]
    assert set(result) >= {"accuracy", "precision", "recall", "false_positive_rate"}

    assert main(["replay", "relabel", store, "--reward", model]) == 0
    assert json.loads(capsys.readouterr().out)["reward_source"] == trained["reward_source"]


def test_bad_input_gives_one_line(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    write_store(store, [[False, True]])
    labels = str(tmp_path / "labels.npz")
    assert main(["reward", "label", str(store), "--out", labels]) == 0
    capsys.readouterr()
    code = main(["reward", "train", "--kind", "vlm", "--labels", labels, "--base", "google/paligemma-3b-pt-224",
                 "--cameras", "front", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "huggingface-cli download google/paligemma-3b-pt-224" in err[0]
    assert main(["reward", "train", "--kind", "preference", "--out", str(tmp_path / "p")]) == 2
    assert "needs --data" in capsys.readouterr().err
