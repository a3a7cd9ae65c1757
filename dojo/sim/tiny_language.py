"""A tiny, randomly initialised sentence encoder (BERT) built from a config in code: the stand-in for a real
sentence-embedding folder in tests and benchmarks, where nothing can be downloaded. It loads through the same
path as a real one (`dojo.policies.language.load_language_encoder`) and tells the twin's instructions apart, but
its embeddings carry no meaning beyond that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Words beyond the twin's instructions, so that nearby phrasings ("lift the red block") are not all [UNK].
_EXTRA_WORDS = ("a an and of onto to from in on up down left right forward back lift grasp place move put pick "
                "push pull open close slide stack block object red blue green yellow cube pad ball peg hole table "
                "gripper robot arm it , . '")


def twin_instructions() -> list[str]:
    """Every instruction of the twin's tasks (dojo.sim.tasks.TASKS), in registry order, without repeats."""
    from dojo.sim.tasks import TASKS

    return list(dict.fromkeys(cls.instruction for cls in TASKS.values() if getattr(cls, "instruction", "")))


def _words(texts: Iterable[str]) -> list[str]:
    # BERT's basic tokenizer lowercases and splits off punctuation: the vocab holds what it will look up.
    return [w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())]


def build_tiny_language_encoder(folder: str | os.PathLike, dim: int = 32, seed: int = 0,
                                extra_text: Iterable[str] = ()) -> Path:
    """A 2-layer BERT with hidden size `dim` (random init from `seed`) and a WordPiece tokenizer whose vocab is
    the twin's instruction words, saved in `folder` with save_pretrained. Returns the folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    if not (isinstance(dim, int) and dim >= 4 and dim % 2 == 0):
        raise ValueError(f"dim must be an even integer >= 4 (two attention heads), got {dim!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = dict.fromkeys((*SPECIALS, *_words((*twin_instructions(), _EXTRA_WORDS, *extra_text))))
    vocab = {word: i for i, word in enumerate(words)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=dim, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * dim, max_position_embeddings=64, pad_token_id=0)
    BertModel(config).eval().save_pretrained(str(folder))
    return folder
