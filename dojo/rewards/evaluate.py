"""How well a success model agrees with a labelled frame set: the figures `dojo reward eval` prints, a confusion
table, and a PNG of the worst mistakes (the most confident false positives and false negatives)."""

from __future__ import annotations

import os

import numpy as np

from dojo.rewards.base import STATE_KEY, RewardModel
from dojo.rewards.labels import LabelSet
from dojo.rewards.metrics import binary_metrics


def predict(model: RewardModel, frames: dict[str, np.ndarray], instructions: list[str], instruction: np.ndarray,
            batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(scores, success) of every labelled frame, each scored with its own episode's instruction."""
    n = len(instruction)
    scores, success = np.zeros(n, np.float32), np.zeros(n, bool)
    for k in np.unique(instruction):
        text = instructions[k] or None
        for i in np.array_split(np.flatnonzero(instruction == k), max(1, -(-np.sum(instruction == k) // batch_size))):
            batch = {key: v[i] for key, v in frames.items()}
            scores[i] = model.score(batch, text, state=batch.get(STATE_KEY))
            success[i] = model.success(batch, text, state=batch.get(STATE_KEY))
    return scores, success


def evaluate(model: RewardModel, labels: LabelSet, worst_png: str | os.PathLike | None = None,
             worst: int = 8, progress: bool = False) -> dict:
    """Accuracy, precision, recall, false-positive rate and the confusion table of `model.success` on `labels`."""
    keys = list(model.manifest.inputs) + ([STATE_KEY] if model.manifest.state_check else [])
    frames = labels.frames(list(dict.fromkeys(keys)), progress=progress)
    scores, success = predict(model, frames, labels.instructions, labels.instruction)
    actual = labels.label == 1
    m = binary_metrics(success, actual)
    result = {**{k: m[k] for k in ("accuracy", "precision", "recall", "false_positive_rate")},
              "confusion": {"actual_success": {"predicted_success": m["tp"], "predicted_failure": m["fn"]},
                            "actual_failure": {"predicted_success": m["fp"], "predicted_failure": m["tn"]}},
              "frames": len(labels), "positives": labels.positives, "negatives": labels.negatives,
              "threshold": model.threshold, "reward_source": model.reward_source}
    if worst_png is not None:
        plot_worst(frames, scores, success, actual, model.manifest.cameras, worst_png, worst)
        result["worst_png"] = os.fspath(worst_png)
    return result


def confusion_table(result: dict) -> str:
    """The confusion counts as a small text table for a terminal."""
    c = result["confusion"]
    rows = [("", "predicted success", "predicted failure"),
            ("actual success", c["actual_success"]["predicted_success"], c["actual_success"]["predicted_failure"]),
            ("actual failure", c["actual_failure"]["predicted_success"], c["actual_failure"]["predicted_failure"])]
    return "\n".join(f"{a:>15} {b!s:>18} {c_!s:>18}" for a, b, c_ in rows)


def plot_worst(frames: dict, scores: np.ndarray, predicted: np.ndarray, actual: np.ndarray, cameras,
               path: str | os.PathLike, worst: int = 8) -> None:
    """One row per mistake (false positives first, most confident first), the cameras side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fp = np.flatnonzero(predicted & ~actual)
    fn = np.flatnonzero(~predicted & actual)
    picks = [("false positive", i) for i in fp[np.argsort(-scores[fp])][:worst]]
    picks += [("false negative", i) for i in fn[np.argsort(scores[fn])][:worst]]
    cameras = list(cameras)
    rows = max(1, len(picks))
    fig, axes = plt.subplots(rows, max(1, len(cameras)), figsize=(2.2 * max(1, len(cameras)), 2.2 * rows),
                             squeeze=False)
    for r, (kind, i) in enumerate(picks):
        for c, cam in enumerate(cameras):
            axes[r, c].imshow(frames[cam][i])
            axes[r, c].set_title(f"{kind} {scores[i]:.3f}\n{cam}" if c == 0 else cam, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    if not picks:
        axes[0, 0].set_title("no mistakes", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
