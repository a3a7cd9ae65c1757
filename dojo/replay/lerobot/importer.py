"""`dojo replay import --format lerobot`: read a local LeRobotDataset v3 folder into a new dojo store.

A LeRobot frame is an observation and the action taken from it, so each frame becomes one step, and the last
frame's observation is repeated as the episode's final observation (LeRobot keeps none after the last action;
its own RL buffer does the same). Folders that dojo exported say so in meta/episodes (`dojo/finished`): there
the last frame is the final observation, and the store comes back exactly. MAPPING.md has the whole mapping.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dojo.replay.lerobot.layout import (ACTION, DONE, DOJO_FIELDS, EPISODES_DIR, IMAGES, INTERVENTION,
                                        OBSERVATION, REWARD, SUCCESS, TRUNCATED, fsync_tree, read_info, read_tasks)
from dojo.replay.lerobot.video import VideoFrames
from dojo.replay.store import SOURCES, EpisodeWriter

_ACTION_TOLERANCE = 1e-5  # the store's own slack on [-1, 1]


def observation_key(feature: str) -> str:
    """The dojo observation key of a LeRobot feature: observation.state -> state, observation.images.front ->
    front, observation.environment_state -> environment_state."""
    return feature[len(IMAGES):] if feature.startswith(IMAGES) else feature[len(OBSERVATION):]


def _numeric(dtype: str) -> bool:
    try:
        return np.issubdtype(np.dtype(dtype), np.number) or np.dtype(dtype) == np.bool_
    except TypeError:  # "video", "image", "string", ...
        return False


def _plan(info: dict, root: Path) -> tuple[dict, list[str]]:
    """{dojo key: (feature, kind)} for the observations dojo can store, and the features it leaves out."""
    features = info["features"]
    action = features.get(ACTION)
    if action is None or len(action["shape"]) != 1 or not _numeric(action["dtype"]):
        raise ValueError(f"{root / 'meta/info.json'}: feature 'action' is {action!r}, expected a 1-D numeric vector "
                         "(dojo stores one action per step)")
    plan, ignored = {}, []
    for name, ft in features.items():
        shape, dtype = tuple(ft["shape"]), ft["dtype"]
        is_depth = bool((ft.get("info") or {}).get("is_depth_map"))
        if name.startswith(OBSERVATION) and dtype in ("video", "image") and len(shape) == 3 and shape[2] == 3 \
                and not is_depth:
            kind = dtype
        elif name.startswith(OBSERVATION) and _numeric(dtype) and len(shape) == 1:
            kind = "vector"
        else:
            if name not in (ACTION, REWARD, DONE, TRUNCATED, SUCCESS, INTERVENTION, "timestamp", "frame_index",
                            "episode_index", "index", "task_index"):
                ignored.append(name)
            continue
        key = observation_key(name)
        if key in plan:
            raise ValueError(f"features {plan[key][0]!r} and {name!r} both map to the dojo observation key {key!r}")
        plan[key] = (name, kind)
    if not plan:
        raise ValueError(f"{root / 'meta/info.json'} has no observation feature dojo can store (observation.state, "
                         f"observation.images.<camera> in RGB, other 1-D observation.<name>); its features: "
                         f"{sorted(features)}")
    return plan, ignored


def _read_episodes(root: Path, total: int, columns: list[str]) -> list[dict]:
    """meta/episodes rows (without the stats), checked to be episodes 0..total-1 with `columns`."""
    if total < 1:
        raise ValueError(f"{root / 'meta/info.json'}: total_episodes is {total}, expected at least one episode")
    paths = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    if not paths:
        raise ValueError(f"{root} is not a complete LeRobot v3 dataset: no parquet files under {root / EPISODES_DIR}")
    rows = []
    for path in paths:
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}, expected them in every meta/episodes file")
        rows += pq.read_table(path, columns=[n for n in names if not n.startswith("stats/")]).to_pylist()
    rows.sort(key=lambda r: r["episode_index"])
    if [r["episode_index"] for r in rows] != list(range(total)):
        raise ValueError(f"{root / EPISODES_DIR} lists episodes {[r['episode_index'] for r in rows][:20]}, "
                         f"expected 0..{total - 1} as info.json's total_episodes says")
    return rows


class _DataFiles:
    """Frames of one episode at a time from the data parquet files, keeping the last file read in memory."""

    def __init__(self, root: Path, template: str, columns: list[str]) -> None:
        self.root, self.template, self.columns = root, template, columns
        self._path, self._table = None, None

    def episode(self, ep: dict) -> pa.Table:
        path = self.root / self.template.format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
        if path != self._path:
            if not path.is_file():
                raise FileNotFoundError(f"data file {path} of episode {ep['episode_index']} is missing")
            present = pq.read_schema(path).names
            missing = [c for c in self.columns if c not in present]
            if missing:
                raise ValueError(f"{path} lacks the columns {missing} that meta/info.json lists as features")
            self._path, self._table = path, pq.read_table(path, columns=self.columns)
        table = self._table.filter(pc.equal(self._table["episode_index"], ep["episode_index"]))
        table = table.sort_by("frame_index")
        if table.num_rows != ep["length"] or table.num_rows == 0:
            raise ValueError(f"{path} holds {table.num_rows} frames of episode {ep['episode_index']}, expected its "
                             f"length {ep['length']} (at least 1) from meta/episodes")
        return table


def _numpy(table: pa.Table, name: str) -> np.ndarray:
    column = table[name].combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(column), -1)
    return column.to_numpy(zero_copy_only=False)


def _images(table: pa.Table, name: str, shape: tuple) -> np.ndarray:
    """Frames of an `image` feature: PNG/JPEG bytes in the parquet file (LeRobot's use_videos=False)."""
    import io

    from PIL import Image

    images = np.empty((table.num_rows, *shape), np.uint8)
    for i, cell in enumerate(table[name].to_pylist()):
        images[i] = np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB"))
    return images


def import_lerobot(dataset: str | os.PathLike, out: str | os.PathLike, *, source: str | None = None,
                   task: str | None = None, rescale_actions: bool = False, progress: bool = False) -> dict:
    """Read the LeRobot v3 folder `dataset` into the new store `out`; returns a summary.

    `source` and `task` set every episode's (default: dojo's own columns when the folder came from dojo, else
    "demo" and ""). Actions must lie in [-1, 1] as in every dojo store; `rescale_actions` maps each dimension's
    [min, max] over the dataset onto [-1, 1] instead (the summary gives the bounds, to map a policy's actions
    back). The store appears whole or not at all: it is written under a hidden name and renamed at the end.
    """
    from tqdm import tqdm

    root, out = Path(dataset), Path(out)
    info = read_info(root)
    if source is not None and source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if out.exists():
        raise FileExistsError(f"{out} already exists; import writes a new store")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: folder {out.parent} does not exist")
    plan, ignored = _plan(info, root)
    features = info["features"]
    tasks = read_tasks(root)
    needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    for name, kind in plan.values():
        if kind == "video":
            needed += [f"videos/{name}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
    episodes = _read_episodes(root, int(info["total_episodes"]), needed)
    flags = [c for c in (REWARD, DONE, TRUNCATED, SUCCESS, INTERVENTION) if c in features]
    columns = ["episode_index", "frame_index", "timestamp", "task_index", ACTION, *flags,
               *(name for name, kind in plan.values() if kind != "video")]
    low, high = _action_bounds(root, info, rescale_actions)

    data = _DataFiles(root, info["data_path"], columns)
    videos = {key: VideoFrames() for key, (_, kind) in plan.items() if kind == "video"}
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    # No fsync per commit: the store only counts once renamed into place, after fsync_tree below.
    writer = EpisodeWriter(tmp, durable=False)
    bar = tqdm(total=len(episodes), desc="import lerobot", unit="ep", file=sys.stderr, disable=not progress)
    steps = 0
    try:
        for ep in episodes:
            frames = data.episode(ep)
            obs = {}
            for key, (name, kind) in plan.items():
                shape = tuple(features[name]["shape"])
                if kind == "video":
                    prefix = f"videos/{name}/"
                    path = root / info["video_path"].format(video_key=name, chunk_index=ep[prefix + "chunk_index"],
                                                            file_index=ep[prefix + "file_index"])
                    obs[key] = videos[key].read(path, ep[prefix + "from_timestamp"] + _numpy(frames, "timestamp"),
                                                shape)
                elif kind == "image":
                    obs[key] = _images(frames, name, shape)
                else:
                    obs[key] = _numpy(frames, name).astype(np.float32 if features[name]["dtype"] == "float64"
                                                           else features[name]["dtype"])
            steps += _write_episode(writer, ep, frames, obs, tasks, info.get("robot_type") or "", source, task,
                                    low, high)
            bar.update(1)
        writer.close()
        fsync_tree(tmp)
        os.replace(tmp, out)
    except BaseException:
        writer.abandon()  # release the store's lock; the folder goes below
        raise
    finally:
        bar.close()
        for v in videos.values():
            v.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"store": str(out), "format": "lerobot", "episodes": len(episodes), "steps": steps,
              "fps": info["fps"], "observation_keys": {k: name for k, (name, _) in plan.items()},
              "ignored_features": ignored, "from_dojo": "dojo/finished" in episodes[0]}
    if rescale_actions:
        result.update(action_low=low.tolist(), action_high=high.tolist())
    return result


def _action_bounds(root: Path, info: dict, rescale: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Every action's per-dimension min and max (read up front: a store refuses actions outside [-1, 1], and
    finding one half-way through would waste the import)."""
    paths = sorted((root / "data").glob("*/*.parquet"))
    if not paths:
        raise ValueError(f"{root} is not a complete LeRobot v3 dataset: no parquet files under {root / 'data'}")
    actions = np.concatenate([_numpy(pq.read_table(p, columns=[ACTION]), ACTION) for p in paths])
    if not np.all(np.isfinite(actions)):
        raise ValueError(f"{root}: some actions are not finite, expected finite numbers")
    low, high = actions.min(0), actions.max(0)
    if rescale:
        return low, high
    if np.all(low >= -1 - _ACTION_TOLERANCE) and np.all(high <= 1 + _ACTION_TOLERANCE):
        return None, None
    raise ValueError(f"{root}: actions span [{low.min():.4g}, {high.max():.4g}] (per dimension: min "
                     f"{np.round(low, 4).tolist()}, max {np.round(high, 4).tolist()}), expected [-1, 1] as in every "
                     "dojo store; pass --rescale-actions to map each dimension's range onto [-1, 1]")


def _write_episode(writer: EpisodeWriter, ep: dict, frames: pa.Table, obs: dict, tasks: dict, robot: str,
                   source: str | None, task: str | None, low: np.ndarray | None, high: np.ndarray | None) -> int:
    n = frames.num_rows
    index = ep["episode_index"]
    action = _numpy(frames, ACTION).astype(np.float64)
    if low is not None:  # --rescale-actions: [low, high] -> [-1, 1]; a constant dimension becomes 0
        span = np.where(high > low, high - low, 1.0)
        action = np.clip(np.where(high > low, 2.0 * (action - low) / span - 1.0, 0.0), -1.0, 1.0)
    names = frames.column_names
    reward = _numpy(frames, REWARD).reshape(n) if REWARD in names else np.zeros(n)
    done = _numpy(frames, DONE).reshape(n).astype(bool) if DONE in names else np.zeros(n, bool)
    cut = _numpy(frames, TRUNCATED).reshape(n).astype(bool) if TRUNCATED in names else np.zeros(n, bool)
    intervened = _numpy(frames, INTERVENTION).reshape(n).astype(bool) if INTERVENTION in names else np.zeros(n, bool)
    if not np.all(np.isfinite(reward)):
        raise ValueError(f"episode {index}: next.reward holds non-finite values, expected finite rewards")
    from_dojo = "dojo/finished" in ep
    finished = bool(ep["dojo/finished"]) if from_dojo else True
    # A dojo export's last frame is the final observation; elsewhere every frame is a step.
    num_steps = n - 1 if from_dojo and finished else n
    ends = done[:num_steps - 1] | cut[:num_steps - 1]
    if np.any(ends):
        raise ValueError(f"episode {index} ends (next.done or next.truncated) at frame {int(np.argmax(ends))} of "
                         f"{n}, expected only at its last step")
    first_task = tasks.get(int(_numpy(frames, "task_index")[0]))
    if first_task is None:
        raise ValueError(f"episode {index}: task_index {int(_numpy(frames, 'task_index')[0])} is not in "
                         "meta/tasks.parquet")
    if from_dojo:
        ended = ("finished", "success", "reward_missed")  # what end_episode takes
        meta = {k: ep[f"dojo/{k}"] for k in DOJO_FIELDS if f"dojo/{k}" in ep and k not in ended}
        success = bool(ep["dojo/success"])
        end_meta = {"reward_missed": int(ep.get("dojo/reward_missed", 0))}
    else:
        meta = {"source": "demo", "task": "", "robot": robot}
        success = bool(_numpy(frames, SUCCESS).any()) if SUCCESS in names else False
        end_meta = {}
    meta["source"] = source or meta["source"]
    meta["task"] = task if task is not None else meta["task"]
    writer.begin_episode(instruction=first_task, **meta)
    for t in range(num_steps):
        last = t == num_steps - 1
        # Without a final observation LeRobot says nothing of how the recording ended: call it cut off (truncated,
        # so that a learner bootstraps past it) unless the dataset marks it done.
        truncated = bool(cut[t]) or (last and not from_dojo and not done[t])
        writer.add_step({k: v[t] for k, v in obs.items()}, action[t], float(reward[t]), bool(done[t]), truncated,
                        intervened=bool(intervened[t]))
    if not finished:
        writer.close_unfinished()
    else:
        writer.end_episode({k: v[n - 1] for k, v in obs.items()}, success=success, **end_meta)
    return n - 1 if from_dojo else n  # the store's count: rows with a next observation
