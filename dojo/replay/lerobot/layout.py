"""The LeRobotDataset v3 layout as dojo reads and writes it: file paths, feature names, the checks on
meta/info.json, and the per-feature statistics LeRobot normalises with. See MAPPING.md beside this file."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dojo.replay.store import META_DTYPES

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
# LeRobot's defaults (lerobot/datasets/utils.py): at most 1000 files per chunk folder, new files past these sizes.
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_MB = 100
VIDEO_FILES_SIZE_MB = 200
# LeRobot's tolerance between a frame's timestamp and the decoded video frame's (LeRobotDataset's tolerance_s).
TOLERANCE_S = 1e-4

# Feature names: LeRobot's (lerobot/utils/constants.py) and its DAgger rollouts' intervention flag.
STATE = "observation.state"
IMAGES = "observation.images."
OBSERVATION = "observation."
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
TRUNCATED = "next.truncated"
SUCCESS = "next.success"
INTERVENTION = "intervention"
INDEX_FEATURES = {  # every LeRobot frame has these (DEFAULT_FEATURES)
    "timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64", "task_index": "int64",
}
# Episode metadata that LeRobot has no field for rides in meta/episodes as extra columns dojo/<field>, which
# LeRobot keeps and lets one filter on (LeRobotDataset(..., episode_filter=lambda ep: ep["dojo/success"])):
# every field of the store's episode table but the row range and the instruction (that one is LeRobot's task).
DOJO_FIELDS = tuple(k for k in META_DTYPES if k not in ("start_row", "stop_row", "instruction"))


def dojo_column_type(field: str) -> pa.DataType:
    dtype = META_DTYPES[field]
    return pa.string() if dtype is str else pa.from_numpy_dtype(np.dtype(dtype))


QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's DEFAULT_QUANTILES, stored as q01 ... q99
_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)$")


def chunk_file(position: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk_index, file_index) of the position-th file of a stream: chunks_size files per chunk folder."""
    return divmod(position, chunks_size)


def read_info(root: Path) -> dict:
    """Read and check meta/info.json of a LeRobot v3 dataset folder."""
    if not root.is_dir():
        raise FileNotFoundError(f"no LeRobot dataset at {root}: directory does not exist")
    path = root / INFO_PATH
    if not path.is_file():
        raise ValueError(f"{root} is not a LeRobot dataset: {path} is missing (expected a LeRobotDataset v3 folder "
                         "with meta/info.json, meta/episodes/, data/)")
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(info, dict):
        raise ValueError(f"{path} holds a {type(info).__name__}, expected a JSON object")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        hint = (" (convert it with LeRobot first: python -m lerobot.scripts.convert_dataset_v21_to_v30)"
                if isinstance(version, str) and _VERSION_RE.match(version) and version < CODEBASE_VERSION else "")
        raise ValueError(f"{path}: codebase_version {version!r} is not supported, expected {CODEBASE_VERSION!r}{hint}")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"{path}: fps is {fps!r}, expected a positive number")
    features = info.get("features")
    if not isinstance(features, dict) or not all(isinstance(f, dict) and "dtype" in f and "shape" in f
                                                  for f in features.values()):
        raise ValueError(f"{path}: 'features' must map each name to {{dtype, shape, ...}}, got {features!r:.200}")
    for key in ("data_path", "total_episodes"):
        if key not in info:
            raise ValueError(f"{path}: {key!r} is missing")
    if any(f["dtype"] == "video" for f in features.values()) and not isinstance(info.get("video_path"), str):
        raise ValueError(f"{path}: the dataset has video features but video_path is {info.get('video_path')!r}")
    return info


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4) + "\n")


def write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def hf_features(features: dict) -> dict:
    """The Hugging Face `datasets` schema of the parquet columns (stored in the files' metadata, as `datasets`
    writes it), so that tools reading the parquet files without LeRobot see the same types."""
    out = {}
    for name, ft in features.items():
        if ft["dtype"] == "video":
            continue
        value = {"dtype": ft["dtype"], "_type": "Value"}
        out[name] = value if list(ft["shape"]) == [1] else {"feature": value, "length": ft["shape"][0],
                                                             "_type": "List"}
    return {"info": {"features": out}}


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet: LeRobot reads it with pandas and expects the task strings as the index, so the
    file carries the pandas metadata that `DataFrame.to_parquet` would write (without needing pandas here)."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                     "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def read_tasks(root: Path) -> dict[int, str]:
    """task_index -> task string, from meta/tasks.parquet (the task is a column or the pandas index)."""
    path = root / TASKS_PATH
    if not path.is_file():
        raise ValueError(f"{root} is not a complete LeRobot v3 dataset: {path} is missing")
    table = pq.read_table(path)
    names = table.column_names
    task_column = "task" if "task" in names else next((n for n in names if n.startswith("__index_level")), None)
    if "task_index" not in names or task_column is None:
        raise ValueError(f"{path} has columns {names}, expected task_index and task")
    return dict(zip(table.column("task_index").to_pylist(), table.column(task_column).to_pylist()))


# --------------------------------------------------------------------------------------------
# Statistics (meta/stats.json and the stats/* columns of meta/episodes): min, max, mean, std, count and
# quantiles per feature, per dimension for vectors and per channel in [0, 1] for images, as LeRobot computes.


def vector_stats(values: np.ndarray) -> dict:
    """Statistics of a (frames, dims) array (booleans count as 0/1)."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q, value in zip(QUANTILES, np.quantile(x, QUANTILES, axis=0)):
        stats[f"q{round(q * 100):02d}"] = value
    return {k: v.tolist() for k, v in stats.items()}


def channel_histogram(images: np.ndarray) -> np.ndarray:
    """(3, 256) counts of each uint8 level per channel of (frames, H, W, 3) images."""
    return np.stack([np.bincount(images[..., c].ravel(), minlength=256) for c in range(images.shape[-1])])


def image_stats(histogram: np.ndarray, frames: int) -> dict:
    """Per-channel statistics of images in [0, 1] from their level histogram (exact, and cheap to add up
    across episodes); shaped (3, 1, 1) as LeRobot broadcasts them over (C, H, W) images."""
    levels = np.arange(256) / 255.0
    counts = histogram.astype(np.float64)
    total = counts.sum(1)
    mean = counts @ levels / total
    std = np.sqrt(np.maximum(counts @ levels**2 / total - mean**2, 0.0))
    present = counts > 0
    lo = levels[np.argmax(present, axis=1)]
    hi = levels[255 - np.argmax(present[:, ::-1], axis=1)]
    cumulative = np.cumsum(counts, axis=1) / total[:, None]
    stats = {"min": lo, "max": hi, "mean": mean, "std": std}
    for q in QUANTILES:
        stats[f"q{round(q * 100):02d}"] = levels[np.argmax(cumulative >= q, axis=1)]
    out = {k: v.reshape(-1, 1, 1).tolist() for k, v in stats.items()}
    out["count"] = [int(frames)]
    return out


def fsync_tree(root: Path) -> None:
    """Make a folder written with plain file writes durable before it is renamed into place."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
