"""The one interface of every camera reward model, its folder manifest, and `load_reward_model(folder)`.

A reward model scores a batch of frames (one uint8 (B, H, W, 3) array per camera, plus "state" where the
model reads it) for the task's instruction: a success probability (classifiers, VLMs) or a reward
(preference models). `success` thresholds the score and ANDs an optional proprioceptive check, as
HIL-SERL's reward wrappers do. A model lives in a folder: `manifest.json` plus the kind's weight files.
Nothing here imports jax or torch; each kind's module is imported when a model of that kind is loaded.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from dojo.fileio import atomic_write

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# kind -> (module, class): imported lazily, so a robot machine without torch still loads a flax classifier.
KINDS = {
    "classifier": ("dojo.rewards.classifier", "SuccessClassifier"),
    "vlm": ("dojo.rewards.vlm", "VLMClassifier"),
    "contrastive": ("dojo.rewards.vlm", "ContrastiveScorer"),
    "preference": ("dojo.rewards.preference", "PreferenceReward"),
}
STATE_KEY = "state"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class StateCheck:
    """One proprioceptive condition ANDed into `success`: min <= state[index] <= max (HIL-SERL's wrappers, e.g.
    the gripper closed and the end-effector above the table: a classifier alone can be fooled by a picture)."""

    index: int
    min: float = -np.inf
    max: float = np.inf
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> StateCheck:
        """`INDEX:MIN:MAX[:NAME]` as given on the command line; an empty MIN or MAX is unbounded."""
        parts = text.split(":")
        try:
            index = int(parts[0])
            lo = float(parts[1]) if parts[1] else -np.inf
            hi = float(parts[2]) if parts[2] else np.inf
        except (IndexError, ValueError):
            raise ValueError(f"state check {text!r} must be INDEX:MIN:MAX[:NAME] (e.g. 13::0.045:gripper_width_m)"
                             ) from None
        if index < 0 or not lo <= hi:
            raise ValueError(f"state check {text!r} needs INDEX >= 0 and MIN <= MAX")
        return cls(index, lo, hi, parts[3] if len(parts) > 3 else "")

    def holds(self, state: np.ndarray) -> np.ndarray:
        if state.shape[-1] <= self.index:
            raise ValueError(f"state check {self.name or self.index} reads state[{self.index}], but the state "
                             f"has {state.shape[-1]} values")
        value = state[..., self.index]
        return (value >= self.min) & (value <= self.max)

    def to_dict(self) -> dict:
        return {"index": self.index, "min": _json_float(self.min), "max": _json_float(self.max), "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> StateCheck:
        return cls(int(d["index"]), float(d["min"]), float(d["max"]), str(d.get("name", "")))


def _json_float(x: float) -> float | str:
    return x if np.isfinite(x) else ("inf" if x > 0 else "-inf")  # JSON has no infinity


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a reward model folder says about itself. `id` is a hash of the folder's content (weights and every
    other field but id, version and created_time_s), so two folders with the same id score alike; `version`
    counts re-trainings into the same folder. A store records "<kind>:<id>:v<version>" as an episode's
    reward_source."""

    kind: str
    inputs: tuple[str, ...]  # observation keys read: camera names, and "state" for a state-input model
    image_size: tuple[int, int] | None  # (height, width) the model expects; None = any (resized inside)
    threshold: float | None  # score >= threshold is success; None for a reward-only (preference) model
    instructions: tuple[str, ...] = ()  # the instructions it was trained for; empty = any (VLMs)
    data: tuple[dict, ...] = ()  # training data: [{store, created_time_s, episodes}, ...]
    state_check: tuple[StateCheck, ...] = ()
    config: dict = dataclasses.field(default_factory=dict)  # the kind's own settings
    metrics: dict = dataclasses.field(default_factory=dict)  # held-out figures from training
    id: str = ""
    version: int = 1
    created_time_s: float = 0.0
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reward model kind {self.kind!r} is unknown; expected one of {sorted(KINDS)}")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number or None, got {self.threshold!r}")

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(k for k in self.inputs if k != STATE_KEY)

    @property
    def reward_source(self) -> str:
        """What a store records as the episode's reward_source: the model's kind, content id and version."""
        return f"{self.kind}:{self.id}:v{self.version}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inputs"], d["instructions"], d["data"] = list(self.inputs), list(self.instructions), list(self.data)
        d["image_size"] = list(self.image_size) if self.image_size else None
        d["state_check"] = [c.to_dict() for c in self.state_check]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"reward model manifest format_version {d.get('format_version')!r} is not supported, "
                             f"expected {FORMAT_VERSION}")
        d = dict(d)
        d["inputs"] = tuple(d["inputs"])
        d["image_size"] = tuple(int(v) for v in d["image_size"]) if d.get("image_size") else None
        d["instructions"], d["data"] = tuple(d.get("instructions", ())), tuple(d.get("data", ()))
        d["state_check"] = tuple(StateCheck.from_dict(c) for c in d.get("state_check", ()))
        return cls(**d)


def data_ids(stores: Sequence) -> tuple[dict, ...]:
    """The training data of a model as the manifest names it: each store's path, creation time and episodes."""
    out = []
    for reader in stores:
        out.append({"store": str(reader.path), "created_time_s": reader.format_attrs.get("created_time_s"),
                    "episodes": reader.num_episodes})
    return tuple(out)


def content_id(folder: Path, manifest: Manifest) -> str:
    """sha256 (first 12 hex digits) over the folder's files except the manifest, then the manifest's fields
    other than id, version and created_time_s."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    fields = {k: v for k, v in manifest.to_dict().items() if k not in ("id", "version", "created_time_s")}
    h.update(json.dumps(fields, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> Manifest:
    """Give the manifest its content id and version (one more than a previous model in this folder), and write it
    last: a folder whose manifest is missing is not a model yet."""
    folder = Path(folder)
    version = 1
    if (folder / MANIFEST).is_file():
        try:
            version = int(json.loads((folder / MANIFEST).read_text()).get("version", 0)) + 1
        except (ValueError, json.JSONDecodeError):
            version = 1
    manifest = dataclasses.replace(manifest, id=content_id(folder, manifest), version=version,
                                   created_time_s=time.time())
    atomic_write(str(folder / MANIFEST), (json.dumps(manifest.to_dict(), indent=1) + "\n").encode())
    return manifest


FLAX_PARAMS = "params.msgpack"


def save_flax_model(folder: str | os.PathLike, params, manifest: Manifest) -> Manifest:
    """A JAX model's parameters (msgpack), then its manifest (write_manifest): the manifest is written last."""
    import flax.serialization
    import jax

    folder = Path(folder)
    atomic_write(str(folder / FLAX_PARAMS),
                 flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray, params)))
    return write_manifest(folder, manifest)


def load_flax_params(folder: Path, what: str):
    """The parameters save_flax_model wrote; `what` names the model in the error."""
    import flax.serialization

    path = folder / FLAX_PARAMS
    if not path.is_file():
        raise FileNotFoundError(f"{what} folder {folder} has no {FLAX_PARAMS}")
    return flax.serialization.msgpack_restore(path.read_bytes())


def read_manifest(folder: str | os.PathLike) -> Manifest:
    folder = local_folder(folder, "reward model")
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a reward model folder: {MANIFEST} is missing "
                                "(train one with `dojo reward train`)")
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a valid reward model manifest: {type(err).__name__}: {err}") from None


def local_folder(path: str | os.PathLike, what: str) -> Path:
    """`path` as an existing local folder. A hub id such as "google/paligemma-3b-pt-224" is refused with how to
    fetch it elsewhere: nothing in dojo downloads weights at run time."""
    text = os.fspath(path)
    folder = Path(text).expanduser()
    if folder.is_dir():
        return folder
    if _HUB_ID_RE.match(text) and not text.startswith((".", "~")):
        raise FileNotFoundError(
            f"{what} {text!r} looks like a model hub id, not a local folder: dojo never downloads weights at run "
            f"time. On a machine with internet run `huggingface-cli download {text} --local-dir {text.split('/')[-1]}`"
            f", copy that folder here and pass its path")
    raise FileNotFoundError(f"{what} folder {text!r} does not exist")


class RewardModel(abc.ABC):
    """Frames (+ instruction) -> success probability or reward, batched; see the module docstring.

    Subclasses implement `_score(inputs, instruction) -> (B,) float32` on checked inputs and `save(folder)`;
    `load(folder, manifest)` is a classmethod.
    """

    manifest: Manifest

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def reward_source(self) -> str:
        return self.manifest.reward_source

    @property
    def threshold(self) -> float | None:
        return self.manifest.threshold

    def score(self, frames: Mapping[str, np.ndarray], instruction: str | None = None,
              state: np.ndarray | None = None) -> np.ndarray:
        """(B,) float32: the success probability (a reward for preference models) of each frame set."""
        inputs, _ = self.check_inputs(frames, state)
        return np.asarray(self._score(inputs, self.check_instruction(instruction)), np.float32)

    def success(self, frames: Mapping[str, np.ndarray], instruction: str | None = None,
                state: np.ndarray | None = None) -> np.ndarray:
        """(B,) bool: score >= threshold, AND every state check (which then needs `state`, (B, D) or (D,))."""
        if self.threshold is None:
            raise ValueError(f"this {self.kind} model has no threshold: it gives a reward, not a success "
                             "(train it with a threshold, or use score())")
        return self.verdict(frames, instruction, state)[1]

    def verdict(self, frames: Mapping[str, np.ndarray], instruction: str | None = None,
                state: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores, success) from one pass of the model: success as `success()` gives it, None without a
        threshold (a preference model's reward)."""
        inputs, batch = self.check_inputs(frames, state)
        scores = np.asarray(self._score(inputs, self.check_instruction(instruction)), np.float32)
        if self.threshold is None:
            return scores, None
        ok = scores >= self.threshold
        if self.manifest.state_check:
            if state is None:
                raise ValueError(f"this model ANDs state checks {[c.to_dict() for c in self.manifest.state_check]}"
                                 ": pass state=")
            state = np.asarray(state, np.float32).reshape(batch, -1)
            for check in self.manifest.state_check:
                ok &= check.holds(state)
        return scores, ok

    def check_instruction(self, instruction: str | None) -> str:
        known = self.manifest.instructions
        if instruction is None:
            if not known and self.kind in ("classifier", "preference"):
                return ""  # trained on episodes without an instruction; it reads none
            if len(known) != 1:
                raise ValueError(f"pass the instruction: this model knows {list(known) or 'any'}")
            return known[0]
        if known and self.kind in ("classifier", "preference") and instruction not in known:
            raise ValueError(f"instruction {instruction!r} is not one this {self.kind} was trained for; "
                             f"expected one of {list(known)}")
        return instruction

    def check_inputs(self, frames: Mapping[str, np.ndarray], state: np.ndarray | None
                     ) -> tuple[dict[str, np.ndarray], int]:
        """Each input as a batch: cameras uint8 (B, H, W, 3) at the model's image size, state float32 (B, D)."""
        if not isinstance(frames, Mapping):
            raise ValueError(f"frames must be a dict camera -> uint8 image(s), got {type(frames).__name__}")
        out, batch = {}, None
        for key in self.manifest.inputs:
            value = state if key == STATE_KEY and key not in frames else frames.get(key)
            if value is None:
                raise ValueError(f"this reward model reads {list(self.manifest.inputs)}; {key!r} is missing "
                                 f"(got {sorted(frames)})")
            value = np.asarray(value)
            if key == STATE_KEY:
                value = value.astype(np.float32).reshape(-1, value.shape[-1])
            else:
                if value.dtype != np.uint8 or value.ndim not in (3, 4) or value.shape[-1] != 3:
                    raise ValueError(f"frames[{key!r}] must be uint8 (H, W, 3) or (B, H, W, 3), got "
                                     f"{value.dtype} {value.shape}")
                value = value[None] if value.ndim == 3 else value
                size = self.manifest.image_size
                if size is not None and tuple(value.shape[1:3]) != tuple(size):
                    raise ValueError(f"frames[{key!r}] are {value.shape[1]}x{value.shape[2]} pixels, expected "
                                     f"{size[0]}x{size[1]} as the model was trained")
            if batch is not None and len(value) != batch:
                raise ValueError(f"inputs have different batch sizes: {key!r} has {len(value)}, expected {batch}")
            out[key], batch = value, len(value)
        return out, int(batch or 0)

    @abc.abstractmethod
    def _score(self, inputs: dict[str, np.ndarray], instruction: str) -> np.ndarray: ...

    @abc.abstractmethod
    def save(self, folder: str | os.PathLike) -> Manifest:
        """Write the weights, then the manifest (with its new id and version); returns that manifest."""


def load_reward_model(folder: str | os.PathLike) -> RewardModel:
    """The reward model saved in `folder` (any kind), ready to score."""
    import importlib

    manifest = read_manifest(folder)
    module, cls = KINDS[manifest.kind]
    return getattr(importlib.import_module(module), cls).load(local_folder(folder, "reward model"), manifest)
