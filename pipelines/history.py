"""A training run's curve for people: history.csv (one row per epoch or validation) and a learning-curve PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from tslrec.core.artifacts import atomic_path

from .trackers import log_history

CSV_FILE = "history.csv"
PNG_FILE = "learning_curve.png"


def write_history(folder: Path, rows: list[dict], x: str, log_with: list[str] | None = None) -> None:
    """<folder>/history.csv with every key of `rows` as a column, and <folder>/learning_curve.png: the training loss
    and each validation metric (keys starting valid_) against `x` (epoch or step); the same rows to the trackers of
    `log_with` (tensorboard, wandb, ...)."""
    if not rows:
        return
    log_history(folder, rows, x, log_with or [])
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(folder / CSV_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in columns if c.startswith("valid_")]
    fig, axes = plt.subplots(1, 1 + len(metrics), figsize=(4.5 * (1 + len(metrics)), 3.2), squeeze=False)
    for ax, key in zip(axes[0], ["loss", *metrics]):
        points = [(row[x], row[key]) for row in rows if row.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_xlabel(x)
        ax.set_title(key)
    fig.tight_layout()
    with atomic_path(folder / PNG_FILE) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def epoch_line(name: str, entry: dict, metric: str, best: str) -> str:
    """One line per epoch, for runs without progress bars: `sasrec-s42 epoch 3: loss 8.29, valid NDCG@10 0.0238`."""
    return (
        f"{name} epoch {entry['epoch']}: loss {entry['loss']:.4f}, valid {metric} {entry[f'valid_{metric}']:.4f}, "
        f"best {best}, {entry['train_seconds']:.1f} s training"
    )


def note_at_cap(what: str, best: int, cap: int, unit: str, flag: str) -> None:
    """Print the end-of-run note when the chosen epoch (or step) is the last one allowed: it may still be improving."""
    if best >= cap:
        print(
            f"note: {what}: the best {unit} is the last one allowed ({cap}); it may still be improving: raise {flag}",
            flush=True,
        )
