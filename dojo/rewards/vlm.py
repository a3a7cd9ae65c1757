"""Vision-language reward models in torch + transformers, from local folders only (nothing downloads):

- `VLMClassifier` (RoboFuME): a VLM asked "<question about the instruction>", scored as P("Yes") against P("No")
  for the next token, optionally fine-tuned with LoRA (`peft`) on labelled frames (`train_vlm`).
- `ContrastiveScorer`: zero-shot SigLIP / CLIP, "done" against "not done" captions; the cheap option.
- `VLMLabeller`: the same VLM as a preference labeller, "which image is closer to the goal, 1 or 2?".

Pixel inputs are built here (resize + normalise with the folder's preprocessor settings), not by the model's
processor: several processors need torchvision, which does not load next to the CPU torch build. Families
whose prompt layout is known: PaliGemma (image tokens, then <bos>, the prompt and a newline).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load is local_files_only as well

import torch  # noqa: E402

from dojo.rewards.base import Manifest, RewardModel, local_folder, write_manifest  # noqa: E402
from dojo.rewards.metrics import balanced_indices, binary_metrics, choose_threshold  # noqa: E402

ADAPTER = "adapter"
VLM_FAMILIES = ("paligemma",)
CONTRASTIVE_FAMILIES = ("clip", "siglip")
QUESTION = "Has the robot finished the task: {instruction}? Answer Yes or No."
CHOICE_QUESTION = "Which image is closer to finishing the task: {instruction}? Answer 1 or 2."
CAPTIONS = ("a robot that has finished the task: {instruction}", "a robot that has not yet finished the task: "
            "{instruction}")
_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def base_fingerprint(folder: Path) -> str:
    """A cheap identity of a base model folder (its config and the names and sizes of its files): hashing
    gigabytes of weights at every load would be slow, and a changed checkpoint changes its sizes or config."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder)}:{path.stat().st_size}".encode())
    config = folder / "config.json"
    if config.is_file():
        h.update(config.read_bytes())
    return h.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Pixels:
    """How frames become the vision tower's input: resize to `size` pixels, scale to [0, 1], normalise."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_folder(cls, folder: Path, vision_config, family: str) -> Pixels:
        mean, std = (_CLIP_MEAN, _CLIP_STD) if family == "clip" else ((0.5,) * 3, (0.5,) * 3)
        side = int(vision_config.image_size)
        size = (side, side)
        path = folder / "preprocessor_config.json"
        if path.is_file():
            pre = json.loads(path.read_text())
            mean, std = tuple(pre.get("image_mean", mean)), tuple(pre.get("image_std", std))
        return cls(size, tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, h, w)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        if tuple(x.shape[-2:]) != self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", antialias=True,
                                                align_corners=False)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


class _PromptedVLM:
    """A PaliGemma-family VLM from a local folder: builds the prompt with its image tokens and returns the logits
    of two answer words for the next token."""

    def __init__(self, folder: str | os.PathLike, adapter: Path | None = None) -> None:
        _quiet_transformers()
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

        self.folder = local_folder(folder, "VLM")
        config = AutoConfig.from_pretrained(self.folder, local_files_only=True)
        if config.model_type not in VLM_FAMILIES:
            raise ValueError(f"VLM {self.folder} is a {config.model_type!r} model; dojo builds prompts for "
                             f"{VLM_FAMILIES}")
        self.model = AutoModelForImageTextToText.from_pretrained(self.folder, local_files_only=True,
                                                                 dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter), is_trainable=False)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        self.pixels = Pixels.from_folder(self.folder, config.vision_config, config.model_type)
        self.image_token_id = int(config.image_token_id)
        vision = config.vision_config
        self.tokens_per_image = (vision.image_size // vision.patch_size) ** 2

    def token_id(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            raise ValueError(f"VLM {self.folder}: the answer {word!r} is not a single token of its tokenizer "
                             f"(got ids {ids}); choose answer words it has")
        return ids[0]

    def prompt_ids(self, images_per_sample: int, prompt: str) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        text = self.tokenizer.encode(prompt + "\n", add_special_tokens=False)
        return [self.image_token_id] * (self.tokens_per_image * images_per_sample) + bos + text

    def answer_logits(self, images: list[np.ndarray], prompt: str, answers: tuple[int, int]) -> torch.Tensor:
        """(B, 2) next-token logits of the two answers; `images` is one uint8 (B, H, W, 3) array per image slot."""
        batch = len(images[0])
        # Sample-major order (sample 0's images, then sample 1's, ...): the model fills image tokens in that order.
        pixel_values = self.pixels(np.stack(images, axis=1).reshape(-1, *images[0].shape[1:]))
        ids = torch.tensor([self.prompt_ids(len(images), prompt)] * batch)
        out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixel_values,
                         logits_to_keep=1)
        return out.logits[:, -1, list(answers)]


class VLMClassifier(RewardModel):
    """P(success) = softmax over the next-token logits of "Yes" and "No" after the question."""

    def __init__(self, manifest: Manifest, vlm: _PromptedVLM) -> None:
        self.manifest, self.vlm = manifest, vlm
        cfg = manifest.config
        self.answers = (vlm.token_id(cfg["yes"]), vlm.token_id(cfg["no"]))

    def logit(self, inputs: dict, instruction: str) -> torch.Tensor:
        """(B,) logit of "Yes" over "No"."""
        question = self.manifest.config["question"].format(instruction=instruction)
        pair = self.vlm.answer_logits([inputs[k] for k in self.manifest.cameras], question, self.answers)
        return pair[:, 0] - pair[:, 1]

    def _score(self, inputs, instruction):
        with torch.no_grad():
            return torch.sigmoid(self.logit(inputs, instruction)).numpy()

    def save(self, folder) -> Manifest:
        folder = Path(folder)
        from peft import PeftModel

        if isinstance(self.vlm.model, PeftModel):
            self.vlm.model.save_pretrained(str(folder / ADAPTER))
        self.manifest = write_manifest(folder, self.manifest)
        return self.manifest

    @classmethod
    def load(cls, folder: Path, manifest: Manifest) -> VLMClassifier:
        adapter = folder / ADAPTER
        base = local_folder(manifest.config["base"], "VLM base model")
        if base_fingerprint(base) != manifest.config["base_fingerprint"]:
            raise ValueError(f"VLM base model {base} is not the one {folder} was trained on (its files differ); "
                             "point config.base of the manifest at that model's folder")
        return cls(manifest, _PromptedVLM(base, adapter if adapter.is_dir() else None))

    @classmethod
    def zero_shot(cls, base: str | os.PathLike, cameras: tuple[str, ...], instructions: tuple[str, ...] = (),
                  question: str = QUESTION, yes: str = "Yes", no: str = "No") -> VLMClassifier:
        vlm = _PromptedVLM(base)
        config = {"base": str(vlm.folder.resolve()), "base_fingerprint": base_fingerprint(vlm.folder),
                  "question": question, "yes": yes, "no": no}
        manifest = Manifest(kind="vlm", inputs=tuple(cameras), image_size=None, threshold=0.5,
                            instructions=tuple(instructions), config=config)
        return cls(manifest, vlm)


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str = "all-linear"  # every linear layer of both towers but the output head
    learning_rate: float = 2e-4
    batch_size: int = 8  # half positives, half negatives
    steps: int = 300
    target_fpr: float = 0.01
    min_threshold: float = 0.5
    seed: int = 0


def train_vlm(model: VLMClassifier, frames: dict[str, np.ndarray], labels: np.ndarray, instruction: np.ndarray,
              instructions: list[str], held_frames: dict[str, np.ndarray], held_labels: np.ndarray,
              held_instruction: np.ndarray, settings: LoraSettings = LoraSettings(), data: tuple = (),
              progress: bool | None = None) -> VLMClassifier:
    """LoRA fine-tuning of a zero-shot VLMClassifier on balanced batches (BCE on the Yes-over-No logit), then the
    threshold on the held-out frames for `settings.target_fpr`."""
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    labels = np.asarray(labels, bool)
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=settings.target_modules)
    model.vlm.model = get_peft_model(model.vlm.model, lora)
    model.vlm.model.train()
    params = [p for p in model.vlm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate)
    bar = tqdm(range(settings.steps), desc="LoRA fine-tune", unit="step", file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))
    for step in bar:
        idx = balanced_indices(labels, settings.batch_size, rng)
        losses = []
        optimizer.zero_grad()
        for k in np.unique(instruction[idx]):  # one prompt per forward pass
            sub = idx[instruction[idx] == k]
            logit = model.logit({c: v[sub] for c, v in frames.items()}, instructions[k])
            target = torch.from_numpy(labels[sub].astype(np.float32))
            # Balanced BCE: each class weighs half of the batch's loss.
            weight = torch.where(target > 0, 0.5 / max(labels[idx].sum(), 1), 0.5 / max((~labels[idx]).sum(), 1))
            losses.append((torch.nn.functional.binary_cross_entropy_with_logits(logit, target, reduction="none")
                           * weight).sum())
        loss = torch.stack(losses).sum()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    model.vlm.model.eval()
    held_labels = np.asarray(held_labels, bool)
    scores = np.zeros(len(held_labels), np.float32)
    for k in np.unique(held_instruction):
        for chunk in np.array_split(np.flatnonzero(held_instruction == k),
                                    max(1, -(-int(np.sum(held_instruction == k)) // 32))):
            scores[chunk] = model.score({c: v[chunk] for c, v in held_frames.items()}, instructions[k])
    threshold = choose_threshold(scores[~held_labels], settings.target_fpr, settings.min_threshold)
    metrics = {"holdout_" + k: v for k, v in binary_metrics(scores >= threshold, held_labels).items()}
    config = {**model.manifest.config, "lora": dataclasses.asdict(settings)}
    model.manifest = dataclasses.replace(model.manifest, threshold=threshold, metrics=metrics, config=config,
                                         data=tuple(data), instructions=tuple(instructions))
    return model


class ContrastiveScorer(RewardModel):
    """Zero-shot SigLIP / CLIP: per camera, softmax of the image's similarity to a "done" and a "not done" caption
    of the instruction; the cameras' probabilities are averaged."""

    def __init__(self, manifest: Manifest) -> None:
        _quiet_transformers()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        self.manifest = manifest
        folder = local_folder(manifest.config["base"], "contrastive model")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type not in CONTRASTIVE_FAMILIES:
            raise ValueError(f"contrastive model {folder} is a {config.model_type!r} model; expected one of "
                             f"{CONTRASTIVE_FAMILIES}")
        self.family = config.model_type
        self.model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.pixels = Pixels.from_folder(folder, config.vision_config, config.model_type)
        self._text_cache: dict[str, torch.Tensor] = {}

    def _text(self, instruction: str) -> torch.Tensor:
        if instruction not in self._text_cache:
            captions = [c.format(instruction=instruction) for c in self.manifest.config["captions"]]
            # SigLIP was trained on max-length padded text; CLIP pads to the longest.
            padding = "max_length" if self.family == "siglip" else True
            tokens = self.tokenizer(captions, padding=padding, return_tensors="pt")
            with torch.no_grad():
                out = self.model.get_text_features(input_ids=tokens["input_ids"],
                                                   **({} if self.family == "siglip" else
                                                      {"attention_mask": tokens["attention_mask"]}))
            text = getattr(out, "pooler_output", out)
            self._text_cache[instruction] = text / text.norm(dim=-1, keepdim=True)
        return self._text_cache[instruction]

    def _score(self, inputs, instruction):
        text = self._text(instruction)
        probs = []
        with torch.no_grad():
            for cam in self.manifest.cameras:
                out = self.model.get_image_features(pixel_values=self.pixels(inputs[cam]))
                image = getattr(out, "pooler_output", out)
                image = image / image.norm(dim=-1, keepdim=True)
                logits = self.model.logit_scale.exp() * image @ text.T
                probs.append(torch.softmax(logits, dim=-1)[:, 0])
        return torch.stack(probs).mean(0).numpy()

    def save(self, folder) -> Manifest:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.manifest = write_manifest(folder, self.manifest)
        return self.manifest

    @classmethod
    def load(cls, folder: Path, manifest: Manifest) -> ContrastiveScorer:
        base = local_folder(manifest.config["base"], "contrastive model")
        if base_fingerprint(base) != manifest.config["base_fingerprint"]:
            raise ValueError(f"contrastive model {base} is not the one {folder} was made with (its files differ)")
        return cls(manifest)

    @classmethod
    def zero_shot(cls, base: str | os.PathLike, cameras: tuple[str, ...], instructions: tuple[str, ...] = (),
                  captions: tuple[str, str] = CAPTIONS) -> ContrastiveScorer:
        folder = local_folder(base, "contrastive model")
        config = {"base": str(folder.resolve()), "base_fingerprint": base_fingerprint(folder),
                  "captions": list(captions)}
        return cls(Manifest(kind="contrastive", inputs=tuple(cameras), image_size=None, threshold=0.5,
                            instructions=tuple(instructions), config=config))


class VLMLabeller:
    """A preference labeller on hardware: the VLM sees both frames' cameras and is asked which is closer to the
    goal; P("1") against P("2") within `unsure_margin` of 0.5 is "unsure" (-1), as in RL-VLM-F."""

    def __init__(self, folder: str | os.PathLike, cameras: tuple[str, ...] = ("front",),
                 unsure_margin: float = 0.1, question: str = CHOICE_QUESTION) -> None:
        if not 0.0 <= unsure_margin < 0.5:
            raise ValueError(f"unsure_margin must be in [0, 0.5), got {unsure_margin!r}")
        self.vlm = _PromptedVLM(folder)
        self.inputs, self.unsure_margin, self.question = tuple(cameras), float(unsure_margin), question
        self.answers = (self.vlm.token_id("1"), self.vlm.token_id("2"))

    def compare(self, obs_a: dict, obs_b: dict, instruction: str | None = None) -> np.ndarray:
        images = [obs_a[k] for k in self.inputs] + [obs_b[k] for k in self.inputs]
        with torch.no_grad():
            pair = self.vlm.answer_logits(images, self.question.format(instruction=instruction or ""), self.answers)
        p_first = torch.softmax(pair, dim=-1)[:, 0].numpy()
        answer = (p_first < 0.5).astype(np.int8)
        answer[np.abs(p_first - 0.5) <= self.unsure_margin] = -1
        return answer
