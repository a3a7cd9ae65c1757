"""Labelled frame sets for success classifiers, built from replay stores (what `dojo reward label` writes).

Positives: the final frames of successful episodes, and every frame an operator marked as a success (a step
whose stored reward reached `mark_reward` marks its next frame: the success button held under
reward.source=human, or the twin's success signal, which stands in for that person). Negatives: every other
frame, except the few just before each run of positives, which RoboFuME leaves out because they look like
success without being it. A set holds row indices into its stores, not pixels: `frames()` reads those.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from dojo.replay.store import StoreReader

MARKS = ("reward", "none")
POSITIVE, NEGATIVE = 1, 0


@dataclasses.dataclass(frozen=True)
class LabelRules:
    final_frames: int = 1  # last frames of a successful episode taken as positives
    marks: str = "reward"  # "reward": steps with reward >= mark_reward mark their next frame; "none": ignore
    mark_reward: float = 1.0
    # RoboFuME's rule: the frames just before success are left out of the negatives. 5 steps = 0.5 s at the
    # twin's 10 Hz, about how long the expert takes to lift the cube from grasp to success height.
    skip_before_success: int = 5

    def __post_init__(self) -> None:
        if self.marks not in MARKS:
            raise ValueError(f"marks must be one of {MARKS}, got {self.marks!r}")
        if not (isinstance(self.final_frames, int) and self.final_frames >= 0):
            raise ValueError(f"final_frames must be an integer >= 0, got {self.final_frames!r}")
        if not (isinstance(self.skip_before_success, int) and self.skip_before_success >= 0):
            raise ValueError(f"skip_before_success must be an integer >= 0, got {self.skip_before_success!r}")


def episode_labels(num_rows: int, success: bool, reward: np.ndarray, rules: LabelRules,
                   use_marks: bool = True) -> np.ndarray:
    """int8 per row of one episode: 1 positive, 0 negative, -1 left out. `reward` has num_rows - 1 steps."""
    positive = np.zeros(num_rows, bool)
    if success and rules.final_frames:
        positive[-rules.final_frames:] = True
    if use_marks and rules.marks == "reward":
        positive[1:] |= np.asarray(reward)[:num_rows - 1] >= rules.mark_reward
    labels = positive.astype(np.int8)
    onsets = np.flatnonzero(positive & ~np.concatenate([[False], positive[:-1]]))
    for onset in onsets:
        window = slice(max(0, onset - rules.skip_before_success), onset)
        labels[window] = np.where(positive[window], POSITIVE, -1)
    return labels


def _from_model(reward_source: str) -> bool:
    """Rewards a reward model wrote (`dojo replay relabel`) are not a person's marks: never learn from them."""
    return ":" in reward_source


@dataclasses.dataclass
class LabelSet:
    """Labelled rows of one or more stores. Row i is `stores[store[i]]` row `row[i]`, in episode `episode[i]`."""

    stores: list[dict]  # {path, created_time_s}
    store: np.ndarray  # int32 (N,)
    row: np.ndarray  # int64 (N,)
    episode: np.ndarray  # int32 (N,): episode index within its store
    label: np.ndarray  # int8 (N,): 1 success, 0 not
    instruction: np.ndarray  # int32 (N,): index into `instructions`
    instructions: list[str]
    rules: dict
    counts: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def positives(self) -> int:
        return int(np.sum(self.label == POSITIVE))

    @property
    def negatives(self) -> int:
        return int(np.sum(self.label == NEGATIVE))

    def subset(self, mask: np.ndarray) -> LabelSet:
        return dataclasses.replace(self, store=self.store[mask], row=self.row[mask], episode=self.episode[mask],
                                   label=self.label[mask], instruction=self.instruction[mask])

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple[LabelSet, LabelSet]:
        """(train, held out) by whole episodes, never by frame (frames of one episode are near copies), drawn
        separately among episodes with and without positives so that both sides get both classes."""
        if not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}")
        key = self.store.astype(np.int64) * (1 << 32) + self.episode
        episodes = np.unique(key)
        has_pos = np.isin(episodes, np.unique(key[self.label == POSITIVE]))
        rng = np.random.default_rng(seed)
        held = []
        for group in (episodes[has_pos], episodes[~has_pos]):
            n = int(round(holdout_fraction * len(group)))
            if len(group) >= 2:
                n = min(max(n, 1), len(group) - 1)
            held.extend(rng.permutation(group)[:n].tolist())
        mask = np.isin(key, held)
        return self.subset(~mask), self.subset(mask)

    def frames(self, keys: Sequence[str], progress: bool = False) -> dict[str, np.ndarray]:
        """The labelled rows' observations, key -> (N, ...), read store by store in episode blocks."""
        from tqdm import tqdm

        out = {}
        for key in keys:
            parts = [None] * len(self)
            for s, meta in enumerate(self.stores):
                reader = open_labelled_store(meta)
                if key not in reader.obs_keys:
                    raise ValueError(f"store {meta['path']} has no observation {key!r}; it has {reader.obs_keys}")
                idx = np.flatnonzero(self.store == s)
                if not len(idx):
                    continue
                eps = np.unique(self.episode[idx])
                for first in tqdm(range(0, len(eps), 32), desc=f"read {key}", disable=not progress, leave=False):
                    block = eps[first:first + 32]
                    lo, hi = reader.episodes[block[0]].start_row, reader.episodes[block[-1]].stop_row
                    rows = reader.read(f"obs/{key}", lo, hi)
                    for i in idx[(self.episode[idx] >= block[0]) & (self.episode[idx] <= block[-1])]:
                        parts[i] = rows[self.row[i] - lo]
            out[key] = np.stack(parts) if len(self) else np.zeros((0,), np.uint8)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """One .npz (no pickle): the index arrays plus a JSON header."""
        header = {"stores": self.stores, "instructions": self.instructions, "rules": self.rules,
                  "counts": self.counts}
        path = os.fspath(path)
        if not path.endswith(".npz"):
            raise ValueError(f"label set file must end in .npz, got {path!r}")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path[:-4] + ".partial.npz"
        np.savez(tmp, store=self.store, row=self.row, episode=self.episode, label=self.label,
                 instruction=self.instruction, header=np.array(json.dumps(header)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelSet:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"label set {os.fspath(path)!r} does not exist (make one with `dojo reward label`)")
        with np.load(path, allow_pickle=False) as z:
            if "header" not in z:
                raise ValueError(f"{os.fspath(path)} is not a dojo label set: it has no header")
            header = json.loads(str(z["header"]))
            return cls(stores=header["stores"], store=z["store"], row=z["row"], episode=z["episode"],
                       label=z["label"], instruction=z["instruction"], instructions=header["instructions"],
                       rules=header["rules"], counts=header.get("counts", {}))

    def summary(self) -> dict:
        return {"frames": len(self), "positives": self.positives, "negatives": self.negatives,
                "episodes": int(len(np.unique(self.store.astype(np.int64) * (1 << 32) + self.episode))),
                "stores": [m["path"] for m in self.stores], "instructions": self.instructions, **self.counts}


def open_labelled_store(meta: dict) -> StoreReader:
    """A label set's store, checked to be the one it was built from (same creation time)."""
    reader = StoreReader(meta["path"])
    created = reader.format_attrs.get("created_time_s")
    if meta.get("created_time_s") is not None and created != meta["created_time_s"]:
        raise ValueError(f"store {meta['path']} was created at {created}, but the label set was built from one "
                         f"created at {meta['created_time_s']}: rebuild the labels with `dojo reward label`")
    return reader


def build_labels(stores: Sequence[str | os.PathLike], rules: LabelRules = LabelRules()) -> LabelSet:
    """Label every frame of every closed episode in `stores` by `rules` (see the module docstring)."""
    if not stores:
        raise ValueError("build_labels needs at least one store, got none")
    metas, parts = [], []
    instructions: dict[str, int] = {}
    counts = {"skipped_near_success": 0, "episodes_with_model_rewards": 0, "successful_episodes": 0}
    for s, path in enumerate(stores):
        reader = StoreReader(path)
        metas.append({"path": os.path.abspath(path), "created_time_s": reader.format_attrs.get("created_time_s")})
        for first in range(0, reader.num_episodes, 256):
            for ep in reader.read_episodes(first, first + 256, obs_keys=()):
                info = ep.info
                rows = info.stop_row - info.start_row
                from_model = _from_model(info.reward_source)
                counts["episodes_with_model_rewards"] += from_model
                success = info.success and info.finished
                counts["successful_episodes"] += success
                labels = episode_labels(rows, success, ep.reward, rules, use_marks=not from_model)
                keep = np.flatnonzero(labels >= 0)
                counts["skipped_near_success"] += int(np.sum(labels < 0))
                instr = instructions.setdefault(info.instruction, len(instructions))
                parts.append((np.full(len(keep), s, np.int32), info.start_row + keep,
                              np.full(len(keep), info.index, np.int32), labels[keep],
                              np.full(len(keep), instr, np.int32)))
    if not parts:
        raise ValueError(f"the stores {[os.fspath(p) for p in stores]} hold no closed episodes to label")
    cols = [np.concatenate(c) for c in zip(*parts)]
    return LabelSet(stores=metas, store=cols[0], row=cols[1].astype(np.int64), episode=cols[2], label=cols[3],
                    instruction=cols[4], instructions=list(instructions), rules=dataclasses.asdict(rules),
                    counts=counts)
