"""Tiny, randomly initialised VLM folders built from a config in code: the stand-ins for a real VLM folder in tests
and benchmarks, where no weights can be downloaded. They load through the same local-folder path as a real
model (config.json, safetensors, tokenizer.json, preprocessor_config.json) but know nothing: what they score
measures the pipeline, never a VLM's judgement.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

# Every word the prompts of dojo.rewards.vlm use, plus the twin's instructions, so that each is one token.
_WORDS = ("Has the robot finished task Answer Yes or No Which image is closer to finishing 1 2 a that has not "
          "yet move gripper red ball pick up cube insert peg into hole")
SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<image>")


def _tokenizer(folder: Path, extra_text: Iterable[str], max_length: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace()
    words = [w for text in (_WORDS, "? : . , ' -", *extra_text) for w, _ in split.pre_tokenize_str(text)]
    vocab = {w: i for i, w in enumerate(dict.fromkeys((*SPECIALS, *words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = split
    # The contrastive text towers pool at the end-of-text token: give every caption one.
    tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", vocab["<eos>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_length)
    fast.save_pretrained(str(folder))
    return vocab


def _preprocessor(folder: Path, image_size: int) -> None:
    with open(folder / "preprocessor_config.json", "w") as f:
        json.dump({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                   "size": {"height": image_size, "width": image_size}}, f)


def _layers(hidden: int) -> dict:
    return {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 2, "num_attention_heads": 2}


def build_tiny_paligemma(folder: str | os.PathLike, hidden_size: int = 32, image_size: int = 32, patch_size: int = 8,
                         extra_text: Iterable[str] = (), seed: int = 0) -> Path:
    """A PaliGemma (SigLIP vision tower + Gemma decoder) at `hidden_size`, saved with its tokenizer in `folder`."""
    import torch
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(folder, extra_text, max_length=512)
    torch.manual_seed(seed)
    config = PaliGemmaConfig(
        vision_config={**_layers(hidden_size), "image_size": image_size, "patch_size": patch_size,
                       "projection_dim": hidden_size},
        text_config={**_layers(hidden_size), "num_key_value_heads": 1, "head_dim": hidden_size // 2,
                     "vocab_size": len(vocab)},
        image_token_index=vocab["<image>"], projection_dim=hidden_size, pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<bos>"], eos_token_id=vocab["<eos>"])
    PaliGemmaForConditionalGeneration(config).save_pretrained(str(folder))
    _preprocessor(folder, image_size)
    return folder


def build_tiny_contrastive(folder: str | os.PathLike, family: str = "siglip", hidden_size: int = 32,
                           image_size: int = 32, patch_size: int = 8, extra_text: Iterable[str] = (),
                           seed: int = 0) -> Path:
    """A SigLIP or CLIP model at `hidden_size`, saved with its tokenizer in `folder`."""
    import torch
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    if family not in ("siglip", "clip"):
        raise ValueError(f"family must be 'siglip' or 'clip', got {family!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    max_length = 32
    vocab = _tokenizer(folder, extra_text, max_length=max_length)
    torch.manual_seed(seed)
    text = {**_layers(hidden_size), "vocab_size": len(vocab), "max_position_embeddings": max_length,
            "pad_token_id": vocab["<pad>"], "bos_token_id": vocab["<bos>"], "eos_token_id": vocab["<eos>"]}
    vision = {**_layers(hidden_size), "image_size": image_size, "patch_size": patch_size}
    if family == "siglip":
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    else:
        model = CLIPModel(CLIPConfig(text_config={**text, "projection_dim": hidden_size},
                                     vision_config={**vision, "projection_dim": hidden_size},
                                     projection_dim=hidden_size))
    model.save_pretrained(str(folder))
    _preprocessor(folder, image_size)
    return folder
