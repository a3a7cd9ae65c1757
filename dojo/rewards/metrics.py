"""Numpy-only helpers every success model shares: batched scoring, the threshold choice and the figures that
`dojo reward eval` prints."""

from __future__ import annotations

import numpy as np


def score_in_batches(model, frames: dict[str, np.ndarray], instruction: str | None = None,
                     batch_size: int = 256) -> np.ndarray:
    """model.score over any number of frames, `batch_size` at a time."""
    n = len(next(iter(frames.values()))) if frames else 0
    out = [model.score({k: v[i:i + batch_size] for k, v in frames.items()}, instruction)
           for i in range(0, n, batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def choose_threshold(negative_scores: np.ndarray, target_fpr: float, min_threshold: float = 0.5) -> float:
    """The lowest threshold (at least `min_threshold`) at which no more than floor(target_fpr * n) of the n held-out
    negatives score >= it: lowest, so that as many successes as possible still pass."""
    scores = np.sort(np.asarray(negative_scores, np.float64))[::-1]
    if scores.size == 0:
        raise ValueError("choosing a threshold needs held-out negatives, got none")
    allowed = int(np.floor(target_fpr * scores.size))
    if allowed >= scores.size:
        return float(min_threshold)
    # Just above the (allowed + 1)-th highest negative: it and every lower one fall under the threshold.
    return float(max(min_threshold, np.nextafter(scores[allowed], np.inf)))


def binary_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """accuracy, precision, recall, false-positive rate and the confusion counts of boolean predictions."""
    predicted, actual = np.asarray(predicted, bool), np.asarray(actual, bool)
    tp, fp = int(np.sum(predicted & actual)), int(np.sum(predicted & ~actual))
    fn, tn = int(np.sum(~predicted & actual)), int(np.sum(~predicted & ~actual))
    n = tp + fp + fn + tn
    return {"accuracy": (tp + tn) / n if n else None, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None, "false_positive_rate": fp / (fp + tn) if fp + tn else None,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def balanced_indices(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A batch of row indices, half positives and half negatives (HIL-SERL's balanced sampling)."""
    labels = np.asarray(labels, bool)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if not len(pos) or not len(neg):
        raise ValueError(f"training needs positives and negatives, got {len(pos)} positives and {len(neg)} negatives")
    half = batch_size // 2
    return np.concatenate([rng.choice(pos, half), rng.choice(neg, batch_size - half)])
