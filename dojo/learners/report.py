"""A run's learning curve from its progress log, as a PNG beside it."""

from __future__ import annotations

from pathlib import Path

from dojo import runs


def plot_learning_curve(run: Path, eval_success: float | None = None) -> Path:
    """RUN/learning_curve.png: practice success (the last 20 episodes) and any in-loop evaluations against
    env steps and wall-clock time, with the final evaluation as a red dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = runs.read_progress(run)
    practice = [r for r in rows if r.get("success_rate") is not None]
    evals = [r for r in rows if r.get("eval_success_rate") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, x, label in ((axes[0], "env_steps", "env steps"), (axes[1], "wall_s", "wall-clock s")):
        ax.plot([r[x] for r in practice], [r["success_rate"] for r in practice], label="practice episodes (last 20)")
        if evals:
            ax.plot([r[x] for r in evals], [r["eval_success_rate"] for r in evals], marker="o",
                    label="evaluations")
        if eval_success is not None and rows:
            ax.scatter([rows[-1][x]], [eval_success], color="red", zorder=3, label="final evaluation")
        ax.set_xlabel(label)
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle(Path(run).name)
    fig.tight_layout()
    path = Path(run) / "learning_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
