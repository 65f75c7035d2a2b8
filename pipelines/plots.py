"""PNG figures of the ablation and the stage-2 analyses (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tslrec.core.artifacts import atomic_path  # noqa: E402
from tslrec.stage2_augment.analysis import ActivityGroups, CategoryAgreement  # noqa: E402

from .ablation_report import ActivityRow, SummaryRow  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def ablation_bars(rows: list[SummaryRow], path: Path, metrics: tuple[str, ...] = ("HR@10", "NDCG@10")) -> None:
    """Grouped bars: one group per backbone, one bar per fusion, error bars = std over seeds.

    * = Welch t-test over seeds, p <= 0.05 vs base.
    """
    backbones = list(dict.fromkeys(r.backbone for r in rows))
    fusions = list(dict.fromkeys(r.fusion for r in rows))
    by_key = {(r.backbone, r.fusion): r for r in rows}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / max(len(fusions), 1)
    x = np.arange(len(backbones))
    for ax, metric in zip(axes[0], metrics):
        for j, fusion in enumerate(fusions):
            rs = [by_key.get((b, fusion)) for b in backbones]
            means = [r.mean[metric] if r else np.nan for r in rs]
            stds = [r.std[metric] if r else 0.0 for r in rs]
            pos = x + (j - (len(fusions) - 1) / 2) * width
            ax.bar(pos, means, width, yerr=stds, capsize=3, label=fusion)
            for p, m, r in zip(pos, means, rs):
                if r is not None and metric in r.tests and r.tests[metric].significant():  # Welch over seeds
                    ax.annotate("*", (p, m), ha="center", va="bottom")
        ax.set_xticks(x, backbones)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(metric)
    axes[0][0].legend(title="fusion", fontsize=8)
    _save(fig, path)


def activity_lines(rows: list[ActivityRow], groups: ActivityGroups, path: Path, metric: str = "NDCG@10") -> None:
    """One panel per backbone: metric per user-activity group, one line per fusion (paper Fig. 5)."""
    rows = [r for r in rows if r.metric == metric]
    backbones = list(dict.fromkeys(r.backbone for r in rows))
    fig, axes = plt.subplots(1, max(len(backbones), 1), figsize=(4 * max(len(backbones), 1), 3.4), squeeze=False)
    x = np.arange(len(groups.users))
    for ax, backbone in zip(axes[0], backbones):
        for r in rows:
            if r.backbone == backbone:
                ax.plot(x, r.values, marker="o", label=r.fusion)
        ax.set_xticks(x, groups.labels, rotation=30)
        ax.set_xlabel("items per user")
        ax.set_title(backbone)
    axes[0][0].set_ylabel(f"test {metric}")
    axes[0][0].legend(title="fusion", fontsize=8)
    _save(fig, path)


def agreement_bar(by_source: dict[str, CategoryAgreement], path: Path) -> None:
    """C1/C2/C3 shares of items per item-table source (paper Fig. 4)."""
    a = next(iter(by_source.values()))
    fig, ax = plt.subplots(figsize=(2 + 2 * len(by_source), 3))
    labels = ["C1\n(top-1)", f"C2\n(in top-{a.top},\nnot top-1)", "C3\n(rest)"]
    width = 0.8 / len(by_source)
    for i, (source, x) in enumerate(by_source.items()):
        ax.bar([j + i * width for j in range(3)], [x.c1, x.c2, x.c3], width, label=source)
    ax.set_xticks([j + width * (len(by_source) - 1) / 2 for j in range(3)], labels)
    ax.axhline(1 / a.k, ls="--", lw=1, color="k", label=f"chance top-1 (1/{a.k})")
    ax.set_ylabel("share of items")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    _save(fig, path)
