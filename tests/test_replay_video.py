"""`dojo replay video|play` on episodes recorded from the twin, and the per-episode reset seed behind `play`."""

import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest

from dojo.launch.cli import main
from dojo.replay.store import EpisodeWriter, open_store, verify_store
from dojo.link.journal import StoreJournal, StoreSink

SEED = 3


@pytest.fixture(scope="module")
def pixel_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "pixels.zarr"
    assert main(["record", "--sim", "pick_cube", "--obs-mode", "pixels", "--image-size", "32", "--episodes", "2",
                 "--seed", str(SEED), "--out", str(out)]) == 0
    return out


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_record_stores_each_episodes_reset_seed(pixel_store):
    assert [e.reset_seed for e in open_store(pixel_store).episodes] == [SEED, SEED + 1]


def test_video_shows_each_row_of_the_episode(pixel_store, tmp_path, capsys):
    out = tmp_path / "ep1.mp4"
    assert main(["replay", "video", str(pixel_store), "--episode", "1", "--out", str(out)]) == 0
    result = last_json(capsys)
    episode = open_store(pixel_store).episode(1)
    frames = np.stack(imageio.mimread(out, memtest=False))
    assert len(frames) == episode.info.num_steps + 1 == result["frames"]
    # Two 32 px views scaled 8x side by side, and a caption band below them.
    assert result["cameras"] == ["front", "wrist"]
    assert frames.shape[1:] == (result["height_px"], 512, 3) and result["height_px"] >= 256 + 5 * 14
    assert len({f.tobytes() for f in frames}) == len(frames)
    # Each frame shows its own row's camera images (below the view's name label), up to compression;
    # rows a step apart differ by more than that (3 to 25 grey levels on average), so order is checked too.
    for key, x in (("front", 0), ("wrist", 256)):
        stored = np.kron(episode.obs[key], np.ones((1, 8, 8, 1)))[:, 24:256].astype(float)
        error = np.abs(frames[:, 24:256, x:x + 256] - stored).mean(axis=(1, 2, 3))
        assert np.all(error < 3.0), (key, error)
        assert np.abs(stored[0] - stored[-1]).mean() > 10.0
    # The caption changes with the step: the band differs between consecutive frames.
    assert not np.array_equal(frames[3, 256:], frames[4, 256:])


def test_video_errors_name_the_problem(pixel_store, tmp_path, capsys):
    out = tmp_path / "bad.mp4"
    assert main(["replay", "video", str(pixel_store), "--episode", "7", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "episode 7 does not exist" in err and "2 closed episodes" in err and not out.exists()
    assert main(["replay", "video", str(pixel_store), "--episode", "0", "--out", str(tmp_path / "x.gif")]) == 2
    assert "must end in one of" in capsys.readouterr().err

    state_store = tmp_path / "state.zarr"
    assert main(["record", "--sim", "reach", "--episodes", "1", "--max-episode-steps", "3",
                 "--out", str(state_store)]) == 0
    capsys.readouterr()
    assert main(["replay", "video", str(state_store), "--episode", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no camera images" in err and "state (" in err and not out.exists()
    assert main(["replay", "video", str(tmp_path / "nowhere.zarr"), "--episode", "0", "--out", str(out)]) == 1
    assert "no replay store" in capsys.readouterr().err


def test_play_reproduces_a_scripted_episode_with_its_seed(pixel_store, capsys):
    for index in (0, 1):
        assert main(["replay", "play", str(pixel_store), "--episode", str(index)]) == 0
        result = last_json(capsys)
        assert result["reset_seed"] == SEED + index and result["task"] == "pick_cube"
        assert result["steps"] == result["stored_steps"] == open_store(pixel_store).episodes[index].num_steps
        assert result["max_ee_deviation_m"] == 0.0 and result["final_ee_deviation_m"] == 0.0
        assert result["replayed_success"] is result["stored_success"] is True
    # Another seed puts the cube elsewhere: the same open-loop actions grasp nothing.
    assert main(["replay", "play", str(pixel_store), "--episode", "0", "--seed", "99"]) == 0
    result = last_json(capsys)
    assert result["max_ee_deviation_m"] > 1e-4 and result["replayed_success"] is False
    assert main(["replay", "play", str(pixel_store), "--episode", "2"]) == 2
    assert "episode 2 does not exist" in capsys.readouterr().err


def test_store_without_reset_seeds_reads_minus_one_and_play_warns(pixel_store, tmp_path, capsys):
    old = tmp_path / "old.zarr"  # as written before the store kept reset seeds
    shutil.copytree(pixel_store, old)
    shutil.rmtree(old / "meta" / "reset_seed")
    assert [e.reset_seed for e in verify_store(old).episodes] == [-1, -1]
    assert main(["replay", "play", str(old), "--episode", "0"]) == 0
    captured = capsys.readouterr()
    assert "no reset seed" in captured.err and json.loads(captured.out)["reset_seed"] == 0
    # The next writer adds the array; new episodes keep their seed, old ones stay unknown.
    with EpisodeWriter(old) as writer:
        episode = open_store(old).episode(0)
        writer.begin_episode(source="demo", task="pick_cube", reset_seed=11)
        writer.add_step({k: v[0] for k, v in episode.obs.items()}, episode.action[0], 0.0, False, True)
        writer.end_episode({k: v[1] for k, v in episode.obs.items()}, success=False)
    assert [e.reset_seed for e in verify_store(old).episodes] == [-1, -1, 11]


def test_reset_seed_travels_through_journal_and_sink(tmp_path):
    journal = StoreJournal(tmp_path / "journal.zarr", memory_steps=0)  # steps re-read from its store
    obs = {"state": np.zeros(3, np.float32)}
    for seed in (42, None):
        journal.begin_episode(source="online", task="t", **({} if seed is None else {"reset_seed": seed}))
        journal.add_step(obs, np.zeros(2), 0.0, False, True)
        journal.end_episode(obs, success=False)
    journal.flush()
    steps = [step for _, step in journal.unacked(0)]
    journal.close()
    sink = StoreSink(tmp_path / "learner.zarr")
    sink.on_steps(1, steps)
    sink.close()
    for path in ("journal.zarr", "learner.zarr"):
        assert [e.reset_seed for e in verify_store(tmp_path / path).episodes] == [42, -1]
    with EpisodeWriter(tmp_path / "bad.zarr") as writer, pytest.raises(ValueError, match="reset_seed.*-5"):
        writer.begin_episode(reset_seed=-5)
