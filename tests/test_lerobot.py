"""LeRobotDataset v3 export and import (`dojo replay export|import --format lerobot`): a store's round trip through
the LeRobot layout, the import of datasets that LeRobot itself wrote (tests/fixtures/lerobot_v3 with videos and
lerobot_v3_images with PNG frames, made by tests/fixtures/lerobot_make_fixture.py with lerobot 0.6.1), and the
one-line refusals of bad input.

LeRobot cannot be imported here (it needs Python >= 3.12 and its own torch); benchmarks/lerobot_roundtrip.py
loads dojo's exports with the real LeRobotDataset in a separate venv.
"""

import dataclasses
import fcntl
import importlib.util
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dojo.launch.cli import main
from dojo.replay.lerobot.export import export_lerobot
from dojo.replay.lerobot.importer import import_lerobot
from dojo.replay.store import EpisodeWriter, StoreReader, verify_store

FIXTURE = Path(__file__).parent / "fixtures" / "lerobot_v3"
_spec = importlib.util.spec_from_file_location("lerobot_make_fixture", FIXTURE.parent / "lerobot_make_fixture.py")
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)  # its expected_frame / expected_image say what the fixture holds

# AV1 at LeRobot's default settings (crf 30, 4:2:0 chroma) measures 29.7-34.4 dB here: 31.9-34.4 dB on the twin's
# 32 and 64 px camera images, 29.7-33.9 dB on the fixture's (LeRobot's own encoding). A frame compared with the
# neighbouring row's scores 16-24 dB, so the bound also checks that every frame lands in its own row.
MIN_PSNR_DB = 28.0
SIZE_PX = 32


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bytes of an array, so that exact equality also tells -0.0 from 0.0."""
    return np.ascontiguousarray(a).view(np.uint8)


def smooth_image(seed: int, t: int) -> np.ndarray:
    y, x = np.mgrid[0:SIZE_PX, 0:SIZE_PX]
    image = np.stack([6 * x + 7 * seed, 5 * y + 3 * t, 120 + 20 * np.sin((x + y + t) / 5)], -1)
    image[2 + t:10 + t, 4:12] = (240, 40 + 30 * seed, 200)
    return np.clip(image, 0, 255).astype(np.uint8)


# (source, task, instruction, steps, ending, success, intervened steps, operator, reset_seed)
EPISODES = [
    ("demo", "pick_cube", "pick up the red cube", 6, "terminal", True, (), "spacemouse", 11),
    ("intervention", "pick_cube", "pick up the red cube", 5, "truncated", False, (1, 2), "gamepad", 12),
    ("online", "peg_insert", "insert the peg into the hole", 4, "terminal", True, (3,), "", -1),
    ("prior", "reach", "", 3, "truncated", False, (), "", 7),  # no instruction: LeRobot's task is the task name
]


@pytest.fixture(scope="module")
def crafted_store(tmp_path_factory) -> Path:
    """Every kind of episode a store holds: four sources, terminal and truncated endings, success and failure,
    interventions, an empty instruction, an extra vector key, a depth image, and an unfinished last episode."""
    path = tmp_path_factory.mktemp("lerobot") / "crafted.zarr"
    rng = np.random.default_rng(0)

    def obs(seed: int, t: int) -> dict:
        return {"state": rng.normal(size=7).astype(np.float32), "object": rng.normal(size=3),
                "front": smooth_image(seed, t), "wrist": smooth_image(seed + 5, t)[::-1].copy(),
                "depth": rng.uniform(0.2, 2.0, (8, 8)).astype(np.float32)}

    writer = EpisodeWriter(path, durable=False)
    for i, (source, task, instruction, steps, ending, success, intervened, operator, seed) in enumerate(EPISODES):
        writer.begin_episode(source=source, task=task, instruction=instruction, operator=operator, robot="fr3",
                             calibration_id=f"cal-{i}", start_time_s=1.7e9 + i, reset_seed=seed)
        for t in range(steps):
            last = t == steps - 1
            writer.add_step(obs(i, t), rng.uniform(-1, 1, 4), float(rng.normal()), last and ending == "terminal",
                            last and ending == "truncated", intervened=t in intervened)
        writer.end_episode(obs(i, steps), success=success)
    writer.begin_episode(source="online", task="pick_cube", instruction="pick up the red cube", reset_seed=99)
    for t in range(3):
        writer.add_step(obs(9, t), rng.uniform(-1, 1, 4), 0.5, False, False)
    writer.flush()
    writer.abandon()  # as if the actor died: the next writer closes the episode as unfinished
    EpisodeWriter(path, durable=False).close()
    return path


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lerobot") / "pixels.zarr"
    assert main(["record", "--sim", "pick_cube", "--obs-mode", "pixels", "--image-size", "32", "--episodes", "2",
                 "--out", str(out)]) == 0
    return out


def assert_same_store(original: Path, back: Path, compare_images: bool = True) -> None:
    a, b = StoreReader(original), StoreReader(back)
    assert a.num_episodes == b.num_episodes and a.num_rows == b.num_rows
    for ea, eb in zip(a.episodes, b.episodes):
        expected = dataclasses.asdict(ea)
        if not ea.instruction:
            expected["instruction"] = ea.task
        assert dataclasses.asdict(eb) == expected
    for key in ("action", "reward", "terminal", "truncated", "intervened"):
        assert np.array_equal(bits(a.read(key)), bits(b.read(key))), key
    # mc_return is not exported: the import recomputes it from the stored float32 rewards, where the recording
    # writer summed the float64 rewards it was handed, so the two differ by float32 rounding at most.
    assert np.allclose(a.read("mc_return"), b.read("mc_return"), rtol=1e-6, atol=1e-6)
    for key, (shape, dtype) in a.obs_spec.items():
        if np.dtype(dtype) == np.uint8 and len(shape) == 3:
            if compare_images:
                assert psnr_db(a.read(f"obs/{key}"), b.read(f"obs/{key}")) > MIN_PSNR_DB, key
        elif len(shape) == 1:
            assert np.array_equal(bits(a.read(f"obs/{key}")), bits(b.read(f"obs/{key}"))), key


def test_round_trip_keeps_states_actions_and_metadata_exactly(crafted_store, tmp_path):
    result = export_lerobot(crafted_store, tmp_path / "ds")
    assert result["episodes"] == 5 and result["frames"] == StoreReader(crafted_store).num_rows
    assert result["cameras"] == ["front", "wrist"] and result["skipped_keys"] == ["depth"]
    assert result["tasks"] == ["pick up the red cube", "insert the peg into the hole", "reach"]
    back = import_lerobot(tmp_path / "ds", tmp_path / "back.zarr")
    assert back["from_dojo"] and back["steps"] == StoreReader(crafted_store).num_steps
    assert_same_store(crafted_store, tmp_path / "back.zarr")
    reader = verify_store(tmp_path / "back.zarr")
    assert set(reader.obs_keys) == {"state", "object", "front", "wrist"}  # the depth image did not travel
    assert [e.finished for e in reader.episodes] == [True] * 4 + [False]


def test_export_writes_the_layout_lerobot_reads(crafted_store, tmp_path):
    out = tmp_path / "ds"
    export_lerobot(crafted_store, out, fps=15)
    reader = StoreReader(crafted_store)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 15 and info["robot_type"] == "fr3"
    assert info["total_episodes"] == 5 and info["total_frames"] == reader.num_rows and info["total_tasks"] == 3
    features = info["features"]
    assert features["observation.state"]["shape"] == [7] and features["observation.object"]["shape"] == [3]
    assert features["observation.images.front"]["dtype"] == "video"
    assert features["observation.images.front"]["shape"] == [SIZE_PX, SIZE_PX, 3]
    assert features["action"] == {"dtype": "float32", "shape": [4], "names": None}
    assert {features[k]["dtype"] for k in ("next.done", "next.truncated", "intervention")} == {"bool"}

    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 7)
    assert data.num_rows == reader.num_rows and pq.ParquetFile(out / "data/chunk-000/file-000.parquet") \
        .metadata.num_row_groups == 5  # one row group per episode, as LeRobot writes them
    assert np.allclose(data["timestamp"].to_numpy(), data["frame_index"].to_numpy() / 15)
    assert data["intervention"].to_pylist() == list(reader.read("intervened"))
    # LeRobot reads tasks.parquet with pandas and looks tasks up by the index.
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert tasks["task"].to_pylist() == ["pick up the red cube", "insert the peg into the hole", "reach"]

    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for ep, info_ep in zip(episodes, reader.episodes):
        assert ep["length"] == info_ep.stop_row - info_ep.start_row
        assert (ep["dataset_from_index"], ep["dataset_to_index"]) == (info_ep.start_row, info_ep.stop_row)
        assert ep["videos/observation.images.front/from_timestamp"] == pytest.approx(info_ep.start_row / 15)
        assert ep["dojo/source"] == info_ep.source and ep["dojo/success"] == info_ep.success
        assert ep["stats/observation.state/count"] == [ep["length"]]
    stats = json.loads((out / "meta/stats.json").read_text())
    assert np.allclose(stats["observation.state"]["mean"], reader.read("obs/state").mean(0), atol=1e-6)
    front = reader.read("obs/front") / 255.0
    assert np.allclose(np.array(stats["observation.images.front"]["max"]).ravel(), front.max((0, 1, 2)))
    assert np.allclose(np.array(stats["observation.images.front"]["mean"]).ravel(), front.mean((0, 1, 2)))
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["observation.images.front",
                                                                  "observation.images.wrist"]


def test_export_splits_files_into_chunks_and_import_follows(crafted_store, tmp_path):
    # Tiny size limits: every episode starts new data and video files, two files per chunk folder.
    export_lerobot(crafted_store, tmp_path / "ds", data_files_size_mb=1e-6, video_files_size_mb=1e-6,
                   chunks_size=2)
    names = sorted(str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds/data").rglob("*.parquet"))
    assert names == ["data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet",
                     "data/chunk-001/file-000.parquet", "data/chunk-001/file-001.parquet",
                     "data/chunk-002/file-000.parquet"]
    # The AV1 encoder holds frames back for its look-ahead, so the videos split later than the data files.
    assert len(list((tmp_path / "ds/videos/observation.images.wrist").rglob("*.mp4"))) >= 2
    import_lerobot(tmp_path / "ds", tmp_path / "back.zarr")
    assert_same_store(crafted_store, tmp_path / "back.zarr")


def test_twin_recording_round_trips_through_the_command_line(twin_store, tmp_path, capsys):
    assert main(["replay", "export", str(twin_store), "--format", "lerobot", "--out", str(tmp_path / "ds")]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["cameras"] == ["front", "wrist"] and exported["tasks"] == ["pick up the red cube"]
    assert main(["replay", "import", str(tmp_path / "ds"), "--out", str(tmp_path / "back.zarr")]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2
    assert_same_store(twin_store, tmp_path / "back.zarr")


def test_import_of_a_dataset_lerobot_wrote(tmp_path):
    result = import_lerobot(FIXTURE, tmp_path / "fx.zarr")
    assert result["observation_keys"] == {"state": "observation.state", "front": "observation.images.front",
                                          "wrist": "observation.images.wrist"}
    assert result["ignored_features"] == [] and not result["from_dojo"]
    reader = verify_store(tmp_path / "fx.zarr")
    assert reader.num_episodes == len(made.EPISODES)
    for index, ((length, task), info) in enumerate(zip(made.EPISODES, reader.episodes)):
        # every frame is a step; the last frame's observation is repeated as the final one
        assert info.num_steps == length and info.finished
        assert (info.instruction, info.source, info.task, info.robot, info.success) == (task, "demo", "", "so100",
                                                                                       False)
        ep = reader.episode(index)
        frames = [made.expected_frame(index, t, length) for t in range(length)]
        state = np.stack([f["observation.state"] for f in frames])
        assert np.array_equal(bits(ep.obs["state"][:-1]), bits(state)) and np.array_equal(ep.obs["state"][-1],
                                                                                           state[-1])
        assert np.array_equal(bits(ep.action), bits(np.stack([f["action"] for f in frames])))
        assert np.array_equal(ep.reward, np.concatenate([f["next.reward"] for f in frames]))
        assert np.array_equal(ep.terminal, np.concatenate([f["next.done"] for f in frames]))
        assert not ep.truncated.any()
        assert np.array_equal(ep.intervened, np.concatenate([f["intervention"] for f in frames]))
        for camera, key in enumerate(("front", "wrist")):
            expected = np.stack([made.expected_image(camera, index, t) for t in range(length)])
            assert psnr_db(ep.obs[key][:-1], expected) > MIN_PSNR_DB, (index, key)
            assert np.array_equal(ep.obs[key][-1], ep.obs[key][-2])


def test_import_of_png_images_is_exact(tmp_path):
    # LeRobot's use_videos=False keeps each frame as a PNG in the parquet file: lossless, so exact here.
    result = import_lerobot(FIXTURE.parent / "lerobot_v3_images", tmp_path / "img.zarr")
    assert result["observation_keys"]["top"] == "observation.images.top"
    reader = verify_store(tmp_path / "img.zarr")
    for index, (length, _) in enumerate(made.IMAGE_EPISODES):
        ep = reader.episode(index)
        expected = np.stack([made.expected_image(0, index, t, made.IMAGE_SIZE_PX) for t in range(length)])
        assert np.array_equal(ep.obs["top"][:-1], expected) and np.array_equal(ep.obs["top"][-1], expected[-1])


def test_import_options_set_source_task_and_rescale_actions(tmp_path, capsys):
    assert main(["replay", "import", str(FIXTURE), "--out", str(tmp_path / "fx.zarr"), "--source", "prior",
                 "--task", "pick_cube", "--rescale-actions"]) == 0
    result = json.loads(capsys.readouterr().out)
    reader = StoreReader(tmp_path / "fx.zarr")
    assert {(e.source, e.task) for e in reader.episodes} == {("prior", "pick_cube")}
    raw = np.concatenate([np.stack([made.expected_frame(i, t, n)["action"] for t in range(n)])
                          for i, (n, _) in enumerate(made.EPISODES)]).astype(np.float64)
    low, high = raw.min(0), raw.max(0)
    assert np.allclose(result["action_low"], low) and np.allclose(result["action_high"], high)
    assert np.allclose(reader.read("action")[:7], 2 * (raw[:7] - low) / (high - low) - 1, atol=1e-6)
    assert reader.read("action").min() == -1.0 and reader.read("action").max() == 1.0


def test_actions_outside_the_unit_box_are_refused_with_their_range(tmp_path, capsys):
    dataset = tmp_path / "degrees"
    shutil.copytree(FIXTURE, dataset)
    path = dataset / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)  # actions as joint angles in degrees, as an SO-100 records: far outside [-1, 1]
    unit_box = table["action"].combine_chunks().flatten().to_numpy()
    degrees = pa.FixedSizeListArray.from_arrays(pa.array(unit_box * np.float32(90.0)), 4)
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", degrees), path)
    assert main(["replay", "import", str(dataset), "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "actions span [-90, 90]" in err and "--rescale-actions" in err
    assert not (tmp_path / "x.zarr").exists()
    assert main(["replay", "import", str(dataset), "--out", str(tmp_path / "x.zarr"), "--rescale-actions"]) == 0


@pytest.mark.parametrize("case", ["missing", "not_lerobot", "v21", "no_tasks", "missing_video"])
def test_bad_datasets_are_refused_in_one_line(case, tmp_path, capsys):
    dataset = tmp_path / "ds"
    if case == "not_lerobot":
        dataset.mkdir()
        (dataset / "notes.txt").write_text("hello")
    elif case != "missing":
        shutil.copytree(FIXTURE, dataset)
    if case == "v21":
        info = json.loads((dataset / "meta/info.json").read_text())
        (dataset / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    elif case == "no_tasks":
        (dataset / "meta/tasks.parquet").unlink()
    elif case == "missing_video":
        (dataset / "videos/observation.images.wrist/chunk-000/file-000.mp4").unlink()
    assert main(["replay", "import", str(dataset), "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dojo replay: error: ")
    expected = {"missing": f"no LeRobot dataset at {dataset}: directory does not exist",
                "not_lerobot": f"{dataset} is not a LeRobot dataset: {dataset}/meta/info.json is missing",
                "v21": "codebase_version 'v2.1' is not supported, expected 'v3.0' (convert it with LeRobot first",
                "no_tasks": f"{dataset}/meta/tasks.parquet is missing",
                "missing_video": "observation.images.wrist/chunk-000/file-000.mp4 is missing"}[case]
    assert expected in err
    assert not (tmp_path / "x.zarr").exists() and not list(tmp_path.glob(".x.zarr.partial-*"))


def test_bad_exports_are_refused_in_one_line(twin_store, tmp_path, capsys):
    state_only = tmp_path / "state.zarr"
    with EpisodeWriter(state_only, durable=False) as writer:
        writer.begin_episode(source="demo")
        writer.add_step({"state": np.zeros(3, np.float32)}, np.zeros(2), 0.0, True, False)
        writer.end_episode({"state": np.zeros(3, np.float32)}, success=True)
    cases = [
        ([str(state_only), "--out", str(tmp_path / "a")], "has no camera images (no uint8 HxWx3 observation key; its "
                                                         "keys: state (3,) float32), expected at least one"),
        ([str(twin_store), "--out", str(tmp_path)], f"{tmp_path} already exists and is not an empty folder"),
        ([str(twin_store), "--out", str(tmp_path / "no/such/dir")], "folder " + str(tmp_path / "no/such")
         + " does not exist"),
        ([str(twin_store), "--out", str(tmp_path / "b"), "--fps", "0"], "fps must be a whole number of frames per "
                                                                         "second >= 1"),
        ([str(twin_store), "--out", str(tmp_path / "c"), "--crf", "70"], "--crf must be in 0..63"),
        ([str(tmp_path / "nothing.zarr"), "--out", str(tmp_path / "d")], "no replay store at"),
    ]
    for args, expected in cases:
        assert main(["replay", "export", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, (args, err)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written folder left


def test_export_shows_progress_on_a_terminal(twin_store, tmp_path):
    master, slave = pty.openpty()
    # A terminal 100 columns wide: tqdm draws nothing on one of width 0, which a fresh pty has.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run([sys.executable, "-m", "dojo.launch.cli", "replay", "export", str(twin_store),
                               "--out", str(tmp_path / "ds")], stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        slave = None
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0 and json.loads(proc.stdout)["episodes"] == 2
    assert b"export lerobot" in shown and b"2/2" in shown
