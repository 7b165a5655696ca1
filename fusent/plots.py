"""Evaluation plots of one model on one labelled part: one-vs-rest ROC and precision-recall curves, and the
reliability diagram of its (calibrated) probabilities. PNG files, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .metrics import average_precision, binary_roc_auc, pr_points, reliability_bins, roc_points


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_plots(
    y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str], out: Path, title: str = ""
) -> list[Path]:
    """``roc.png``, ``pr.png`` and ``reliability.png`` in ``out``; returns the paths."""
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    y, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    paths = [out / "roc.png", out / "pr.png", out / "reliability.png"]
    for path, kind in zip(paths[:2], ("roc", "pr"), strict=True):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        for k, label in enumerate(labels):
            positives = y == k
            if not positives.any() or positives.all():
                continue
            if kind == "roc":
                fpr, tpr = roc_points(positives, probs[:, k])
                ax.plot(fpr, tpr, label=f"{label} (AUC {binary_roc_auc(positives, probs[:, k]):.3f})")
            else:
                recall, precision = pr_points(positives, probs[:, k])
                ax.step(
                    recall,
                    precision,
                    where="post",
                    label=f"{label} (AP {average_precision(positives, probs[:, k]):.3f})",
                )
        if kind == "roc":
            ax.plot([0, 1], [0, 1], ls=":", color="grey")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
        else:
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
        ax.set_title(f"{'ROC' if kind == 'roc' else 'precision-recall'} (one vs rest){': ' + title if title else ''}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    bins = reliability_bins(y, probs)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.bar(
        centres,
        [0 if b["n"] == 0 else b["accuracy"] for b in bins],
        width=1 / len(bins),
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability{': ' + title if title else ''}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
