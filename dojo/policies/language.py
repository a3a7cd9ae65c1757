"""Instruction embeddings for language-conditioned policies and critics: a sentence-embedding (BERT-like, mean
pooled) or CLIP text model loaded from a local folder with `transformers`, one cached vector per instruction.

torch and transformers are imported only by `load_language_encoder`, so dojo.policies imports without them.
Nothing is downloaded: the folder must hold the model (config.json, weights, tokenizer files).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

CLIP_TYPES = ("clip", "clip_text_model")
# Files up to this size are hashed whole for the id; larger ones (a big checkpoint) by their size and their
# first and last MiB, so that loading a gigabyte model does not spend seconds hashing it.
_HASH_WHOLE_BYTES = 256 << 20
_HASH_EDGE_BYTES = 1 << 20


def folder_fingerprint(folder: Path) -> str:
    """A short, stable hash of a model folder's files (names and contents): its weights, config and tokenizer.
    A copy of the folder elsewhere has the same fingerprint; a re-initialised or fine-tuned model does not."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in files:
        size = path.stat().st_size
        h.update(f"{path.relative_to(folder).as_posix()}:{size}\n".encode())
        with open(path, "rb") as f:
            if size <= _HASH_WHOLE_BYTES:
                h.update(f.read())
            else:
                h.update(f.read(_HASH_EDGE_BYTES))
                f.seek(size - _HASH_EDGE_BYTES)
                h.update(f.read(_HASH_EDGE_BYTES))
    return h.hexdigest()[:12]


def _check_folder(folder) -> Path:
    path = Path(os.fspath(folder)).expanduser()
    if not path.is_dir():
        raise NotADirectoryError(
            f"language encoder {str(folder)!r} is not a local folder; expected a folder holding a sentence-embedding "
            "or CLIP text model (config.json, weights, tokenizer files); nothing is downloaded")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"language encoder folder {str(path)!r} has no config.json; expected a transformers "
                                "model saved with save_pretrained")
    return path


def _pooling(folder: Path) -> str:
    """"mean" unless a sentence-transformers pooling config (1_Pooling/config.json) asks for the CLS token."""
    for config in sorted(folder.glob("*Pooling*/config.json")):
        with open(config) as f:
            modes = json.load(f)
        if modes.get("pooling_mode_cls_token") and not modes.get("pooling_mode_mean_tokens"):
            return "cls"
    return "mean"


class LanguageEncoder:
    """`encode(instructions) -> (n, dim)` float32, L2-normalised; each instruction string is embedded once and
    kept (`forward_passes` counts the model's runs). `id` names the model: the folder's name and `fingerprint`, a
    hash of its files, so that a policy or critic trained on one encoder can refuse another (compare
    fingerprints: a copy of the folder under another name is the same model)."""

    def __init__(self, folder: Path, model, tokenizer, kind: str, dim: int, pooling: str = "mean") -> None:
        self.folder, self.kind, self.pooling = folder, kind, pooling
        self._model, self._tokenizer = model, tokenizer
        self.dim = int(dim)
        self.fingerprint = folder_fingerprint(folder)
        self.id = f"{folder.name}-{self.fingerprint}"
        self._cache: dict[str, np.ndarray] = {}
        self.forward_passes = 0

    def __repr__(self) -> str:
        return f"LanguageEncoder({self.id!r}, kind={self.kind!r}, dim={self.dim})"

    def encode(self, instructions: Sequence[str]) -> np.ndarray:
        if isinstance(instructions, str):
            raise TypeError("encode takes a sequence of instructions; wrap a single one in a list: encode([text])")
        texts = [str(t) for t in instructions]
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            for text, vector in zip(new, self._embed(new)):
                self._cache[text] = vector
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def _embed(self, texts: list[str]) -> np.ndarray:
        import torch

        tokens = self._tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            if self.kind == "clip":
                out = self._model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
                vectors = out.text_embeds
            else:
                hidden = self._model(**tokens).last_hidden_state  # (n, L, hidden)
                if self.pooling == "cls":
                    vectors = hidden[:, 0]
                else:  # mean over the real tokens (sentence-transformers' pooling)
                    mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        self.forward_passes += 1
        vectors = vectors.float().numpy()
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def load_language_encoder(folder) -> LanguageEncoder:
    """The language encoder in `folder` (local only): a CLIP text tower when its config says clip, otherwise the
    folder's transformers encoder (BERT, MiniLM, MPNet, ...) with mean pooling."""
    path = _check_folder(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load below is local_files_only too
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModelWithProjection
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"language encoder folder {str(path)!r} does not load as a transformers model: "
                         f"{first}") from None
    if config.model_type in CLIP_TYPES:
        model = CLIPTextModelWithProjection.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        text_config = getattr(config, "text_config", config)
        dim = getattr(config, "projection_dim", None) or text_config.projection_dim
        kind, pooling = "clip", "projection"
    else:
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        dim, kind, pooling = config.hidden_size, "sentence", _pooling(path)
    return LanguageEncoder(path, model.eval(), tokenizer, kind, dim, pooling)
