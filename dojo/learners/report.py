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


def finished_episodes(run: Path) -> list:
    """Every finished episode of a run's actors (a practice run's attempts), in the order they began:
    (EpisodeInfo, the operator's takeovers in it)."""
    import numpy as np

    from dojo.replay.store import StoreReader

    attempts = []
    for store in sorted((Path(run) / runs.REPLAY).glob("*.zarr")):
        reader = StoreReader(store)
        intervened = reader.read("intervened").astype(bool) if reader.num_rows else None
        for e in reader.episodes:
            if e.finished:
                steps = intervened[e.start_row:e.stop_row - 1]
                attempts.append((e, int(np.sum(steps[1:] & ~steps[:-1]) + (steps[:1].sum()))))
    return sorted(attempts, key=lambda pair: pair[0].start_time_s)


def stored_steps(run: Path) -> int:
    """The env steps a run's replay stores hold, as the learner's budget counts them: an episode cut short by a
    crash has no final observation, and the attempt still open when the learner stopped counts too."""
    from dojo.replay.store import StoreReader

    total = 0
    for store in sorted((Path(run) / runs.REPLAY).glob("*.zarr")):
        reader = StoreReader(store)
        total += sum(e.num_steps + (not e.finished) for e in reader.episodes)
        if reader.open_episode is not None:
            total += reader.num_rows - reader.open_episode["start_row"]
    return total


def practice_report(run: Path, names: dict[str, str], last: int = 50, window: int = 20) -> dict:
    """A practice session's figures, RUN/practice.png and its TensorBoard scalars (RUN/tb/practice): success per
    direction (`names`: direction -> task name) against attempts and wall-clock, human resets and intervened
    steps per hour, attempt lengths. Success rates are over each direction's last `last` attempts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attempts = finished_episodes(run)
    t0 = attempts[0][0].start_time_s if attempts else 0.0
    hours = max((attempts[-1][0].start_time_s - t0) / 3600, 1e-9) if attempts else 0.0
    human = sum(e.reset == "human" for e, _ in attempts)
    report = {"attempts": len(attempts), "env_steps": stored_steps(run),
              "human_resets": human, "human_resets_per_100": round(100 * human / max(len(attempts), 1), 2),
              "human_resets_per_hour": round(human / hours, 2) if hours else None,
              "human_resets_last_100": sum(e.reset == "human" for e, _ in attempts[-100:]),
              "interventions_per_hour": round(sum(n for _, n in attempts) / hours, 2) if hours else None,
              "attempt_steps_mean": round(float(np.mean([e.num_steps for e, _ in attempts])), 1) if attempts else None}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    tb = tensorboard_writer(Path(run) / "tb" / "practice")
    for direction, name in names.items():
        mine = [(i, e) for i, (e, _) in enumerate(attempts) if e.task == name]
        done = [e.success for _, e in mine]
        report[f"{direction}_attempts"] = len(mine)
        report[f"{direction}_success"] = round(float(np.mean(done[-last:])), 3) if done else None
        rolling = [float(np.mean(done[max(0, k - window + 1):k + 1])) for k in range(len(done))]
        axes[0].plot(range(1, len(done) + 1), rolling, label=f"{direction} ({name})")
        axes[1].plot([(e.start_time_s - t0) / 3600 for _, e in mine], rolling, label=direction)
        axes[2].hist([e.num_steps for _, e in mine], bins=20, alpha=0.5, label=direction)
        for k, rate in enumerate(rolling):
            tb.add_scalar(f"practice/{direction}_success_last{window}", rate, k + 1)
    for k, (e, n) in enumerate(attempts):
        tb.add_scalar("practice/human_resets", sum(a.reset == "human" for a, _ in attempts[:k + 1]), k + 1)
        tb.add_scalar("practice/attempt_steps", e.num_steps, k + 1)
    tb.close()
    for ax, xlabel, ylabel in ((axes[0], "attempts of the direction", f"success (last {window})"),
                               (axes[1], "wall-clock hours", f"success (last {window})"),
                               (axes[2], "attempt length, steps", "attempts")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(f"{Path(run).name}: {report['attempts']} attempts, {human} human resets, "
                 f"{report['interventions_per_hour']} interventions per hour")
    fig.tight_layout()
    fig.savefig(Path(run) / "practice.png", dpi=100)
    plt.close(fig)
    return report


def tensorboard_writer(path: Path):
    """A TensorBoard event writer for `path` (tensorboardX, imported when first needed)."""
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(path))
