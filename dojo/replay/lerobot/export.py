"""`dojo replay export --format lerobot`: write a store's closed episodes as a LeRobotDataset v3 folder.

Every stored row becomes one frame, so an episode of T steps has T + 1 frames and its last frame is the final
observation (action and reward zero padding, as in the store). MAPPING.md says where each field goes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dojo.replay.lerobot.layout import (ACTION, CHUNKS_SIZE, CODEBASE_VERSION, DATA_FILES_SIZE_MB, DATA_PATH,
                                        DOJO_FIELDS, DONE, EPISODES_PATH, IMAGES, INDEX_FEATURES, INFO_PATH,
                                        INTERVENTION, OBSERVATION, REWARD, STATE, STATS_PATH, TASKS_PATH, TRUNCATED,
                                        VIDEO_FILES_SIZE_MB, VIDEO_PATH, channel_histogram, chunk_file,
                                        dojo_column_type, fsync_tree, hf_features, image_stats, tasks_table,
                                        vector_stats, write_json, write_parquet)
from dojo.replay.lerobot.video import VideoSettings, VideoShards
from dojo.replay.store import EpisodeInfo, StoreReader

_BLOCK_BYTES = 32 << 20  # rows read from the store at a time: whole episodes, about this many bytes
# The per-row store arrays and the frame column each becomes (the action is exported beside them).
_STEP_COLUMNS = {"reward": (REWARD, "float32"), "terminal": (DONE, "bool"), "truncated": (TRUNCATED, "bool"),
                 "intervened": (INTERVENTION, "bool")}


def camera_keys(obs_spec: dict) -> list[str]:
    """Observation keys that hold RGB images: uint8 arrays of shape (H, W, 3)."""
    return [k for k, (shape, dtype) in obs_spec.items()
            if np.dtype(dtype) == np.uint8 and len(shape) == 3 and shape[2] == 3]


def feature_name(key: str, camera: bool) -> str:
    """The LeRobot feature of an observation key: state -> observation.state, front -> observation.images.front."""
    return (IMAGES + key) if camera else STATE if key == "state" else OBSERVATION + key


class _ParquetShards:
    """Appends episodes (one row group each, as LeRobot writes them) to chunk-XXX/file-YYY.parquet files,
    starting a new file once the current one holds `file_size_mb` of uncompressed columns."""

    def __init__(self, root: Path, schema: pa.Schema, *, file_size_mb: float, chunks_size: int) -> None:
        self.root, self.schema = root, schema
        self.file_size_bytes = file_size_mb * (1 << 20)
        self.chunks_size = chunks_size
        self._position, self._bytes, self._writer = -1, 0, None

    def append(self, table: pa.Table) -> tuple[int, int]:
        if self._writer is not None and self._bytes >= self.file_size_bytes:
            self.close()
        if self._writer is None:
            self._position += 1
            chunk_index, file_index = chunk_file(self._position, self.chunks_size)
            path = self.root / DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._writer, self._bytes = pq.ParquetWriter(path, self.schema, compression="snappy"), 0
        self._writer.write_table(table.cast(self.schema))
        self._bytes += table.nbytes
        return chunk_file(self._position, self.chunks_size)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _column(values: np.ndarray, dtype: str) -> pa.Array:
    """A frame column: a scalar per frame for shape (1,) features, else a fixed-size list (LeRobot's layout)."""
    values = np.asarray(values, dtype=dtype)
    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def export_lerobot(store: str | os.PathLike | StoreReader, out: str | os.PathLike, *, fps: int = 10,
                   video: VideoSettings = VideoSettings(), data_files_size_mb: float = DATA_FILES_SIZE_MB,
                   video_files_size_mb: float = VIDEO_FILES_SIZE_MB, chunks_size: int = CHUNKS_SIZE,
                   progress: bool = False) -> dict:
    """Write the closed episodes of `store` to the new folder `out` as a LeRobotDataset v3; returns a summary.

    `fps` is the rate the store was recorded at (the store does not keep it). The folder appears whole or not
    at all: it is written beside `out` under a hidden name and renamed at the end.
    """
    from tqdm import tqdm

    out = Path(out)
    if isinstance(fps, bool) or not isinstance(fps, (int, np.integer)) or fps < 1:
        raise ValueError(f"fps must be a whole number of frames per second >= 1 (LeRobot's info.json keeps an "
                         f"integer), got {fps!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder; export writes a new folder")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: folder {out.parent} does not exist")
    reader = store if isinstance(store, StoreReader) else StoreReader(store)
    spec = reader.obs_spec or {}
    cameras = camera_keys(spec)
    if not cameras:
        keys = ", ".join(f"{k} {tuple(s)} {np.dtype(d)}" for k, (s, d) in spec.items())
        raise ValueError(f"{reader.path} has no camera images (no uint8 HxWx3 observation key; its keys: "
                         f"{keys or 'none'}), expected at least one for a LeRobot dataset's videos; record with "
                         "--obs-mode pixels or both")
    for key in cameras:
        h, w, _ = spec[key][0]
        if h % 2 or w % 2:
            raise ValueError(f"camera {key!r} has {h}x{w} images, expected an even height and width "
                             f"({video.pix_fmt} video halves the colour resolution)")
    vectors = [k for k, (shape, _) in spec.items() if len(shape) == 1]
    skipped = [k for k in spec if k not in cameras and k not in vectors]  # e.g. depth images
    if reader.num_episodes == 0:
        raise ValueError(f"{reader.path} has no closed episodes, expected at least one to export")

    features: dict[str, dict] = {}
    for key in vectors:
        features[feature_name(key, False)] = {"dtype": "float32", "shape": [spec[key][0][0]], "names": None}
    for key in cameras:
        h, w, _ = spec[key][0]
        features[feature_name(key, True)] = {"dtype": "video", "shape": [h, w, 3],
                                             "names": ["height", "width", "channels"],
                                             "info": video.info(h, w, fps)}
    features[ACTION] = {"dtype": "float32", "shape": [reader.action_dim], "names": None}
    for name, dtype in _STEP_COLUMNS.values():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    for name, dtype in INDEX_FEATURES.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    schema = pa.schema([(name, pa.from_numpy_dtype(np.dtype(ft["dtype"])) if ft["shape"] == [1]
                         else pa.list_(pa.from_numpy_dtype(np.dtype(ft["dtype"])), ft["shape"][0]))
                        for name, ft in features.items() if ft["dtype"] != "video"],
                       metadata={b"huggingface": json.dumps(hf_features(features)).encode()})

    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    data = _ParquetShards(tmp, schema, file_size_mb=data_files_size_mb, chunks_size=chunks_size)
    videos = {k: VideoShards(tmp, feature_name(k, True), fps, video, file_size_mb=video_files_size_mb,
                             chunks_size=chunks_size) for k in cameras}
    tasks: dict[str, int] = {}
    episode_rows: list[dict] = []
    totals = {name: [] for name in schema.names}  # every frame's values, for meta/stats.json
    histograms = {k: np.zeros((3, 256), np.int64) for k in cameras}
    bar = tqdm(total=reader.num_episodes, desc="export lerobot", unit="ep", file=sys.stderr, disable=not progress)
    try:
        frame_count = 0
        for block in _episode_blocks(reader, vectors + cameras):
            lo = block[0].start_row
            rows = {k: reader.read(k, lo, block[-1].stop_row)
                    for k in (*(f"obs/{k}" for k in vectors + cameras), "action", *_STEP_COLUMNS)}
            for ep in block:
                a, b = ep.start_row - lo, ep.stop_row - lo
                n = b - a
                task = ep.instruction or ep.task
                task_index = tasks.setdefault(task, len(tasks))
                columns = {feature_name(k, False): rows[f"obs/{k}"][a:b] for k in vectors}
                columns[ACTION] = rows["action"][a:b]
                columns.update({name: rows[k][a:b] for k, (name, _) in _STEP_COLUMNS.items()})
                frame_index = np.arange(n)
                columns.update({"timestamp": frame_index / fps, "frame_index": frame_index,
                                "episode_index": np.full(n, ep.index), "index": frame_count + frame_index,
                                "task_index": np.full(n, task_index)})
                table = pa.table({name: _column(values, features[name]["dtype"]) for name, values in columns.items()})
                chunk_index, file_index = data.append(table)
                row = {"episode_index": ep.index, "tasks": [task], "length": n, "data/chunk_index": chunk_index,
                       "data/file_index": file_index, "dataset_from_index": frame_count,
                       "dataset_to_index": frame_count + n}
                for name, values in columns.items():
                    totals[name].append(np.asarray(values, np.float64).reshape(n, -1))
                    row.update({f"stats/{name}/{s}": v for s, v in vector_stats(values).items()})
                for key in cameras:
                    images = rows[f"obs/{key}"][a:b]
                    row.update(videos[key].append(images))
                    histogram = channel_histogram(images)
                    histograms[key] += histogram
                    row.update({f"stats/{feature_name(key, True)}/{s}": v
                                for s, v in image_stats(histogram, n).items()})
                row.update({f"dojo/{k}": getattr(ep, k) for k in DOJO_FIELDS})
                episode_rows.append(row)
                frame_count += n
                bar.update(1)
        data.close()
        for shards in videos.values():
            shards.close()
        stats = {name: vector_stats(np.concatenate(values)) for name, values in totals.items()}
        stats.update({feature_name(k, True): image_stats(histograms[k], frame_count) for k in cameras})
        _write_episodes(tmp, episode_rows, data_files_size_mb, chunks_size)
        write_parquet(tmp / TASKS_PATH, tasks_table(list(tasks)))
        write_json(tmp / STATS_PATH, stats)
        robots = {ep.robot for ep in reader.episodes if ep.robot}
        write_json(tmp / INFO_PATH, {
            "codebase_version": CODEBASE_VERSION, "fps": int(fps), "features": features,
            "total_episodes": reader.num_episodes, "total_frames": frame_count, "total_tasks": len(tasks),
            "chunks_size": chunks_size, "data_files_size_in_mb": data_files_size_mb,
            "video_files_size_in_mb": video_files_size_mb, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
            "robot_type": robots.pop() if len(robots) == 1 else None,
            "splits": {"train": f"0:{reader.num_episodes}"},
        })
        fsync_tree(tmp)
        if out.exists():
            out.rmdir()  # the empty folder the caller made
        os.replace(tmp, out)
    except BaseException:
        for writer in (data, *videos.values()):  # quietly: the error that got us here is the one to report
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return {"out": str(out), "format": "lerobot", "codebase_version": CODEBASE_VERSION,
            "episodes": reader.num_episodes, "frames": frame_count, "fps": int(fps), "tasks": list(tasks),
            "cameras": cameras, "features": list(features), "skipped_keys": skipped,
            "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}


def _episode_blocks(reader: StoreReader, keys: list[str]):
    """Closed episodes in runs of about _BLOCK_BYTES of rows (at least one episode each)."""
    spec = reader.obs_spec
    row_bytes = sum(int(np.prod(spec[k][0])) * np.dtype(spec[k][1]).itemsize for k in keys) + 4 * reader.action_dim
    block: list[EpisodeInfo] = []
    for ep in reader.episodes:
        if block and (ep.stop_row - block[0].start_row) * row_bytes > _BLOCK_BYTES:
            yield block
            block = []
        block.append(ep)
    if block:
        yield block


def _write_episodes(root: Path, rows: list[dict], file_size_mb: float, chunks_size: int) -> None:
    """meta/episodes/chunk-XXX/file-YYY.parquet: one row per episode, in files of about file_size_mb."""
    probe = pa.Table.from_pylist(rows[:1])
    per_file = max(1, int(file_size_mb * (1 << 20) // max(1, probe.nbytes)))
    for position, first in enumerate(range(0, len(rows), per_file)):
        chunk_index, file_index = chunk_file(position, chunks_size)
        part = rows[first:first + per_file]
        for row in part:
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk_index, file_index
        table = pa.Table.from_pylist(part)
        types = [dojo_column_type(f.name[5:]) if f.name.startswith("dojo/") else f.type for f in table.schema]
        table = table.cast(pa.schema([pa.field(f.name, t) for f, t in zip(table.schema, types)]))
        write_parquet(root / EPISODES_PATH.format(chunk_index=chunk_index, file_index=file_index), table)
