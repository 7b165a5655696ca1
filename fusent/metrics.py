"""Classification metrics computed from the confusion matrix, so every number traces to one table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = samples of true class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy; precision, recall, F1 (macro and support-weighted); per-class P/R/F1/support; confusion matrix.

    A class never predicted has precision 0 (and F1 0), as in scikit-learn's ``zero_division=0``.
    """
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1).astype(float), cm.sum(0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum()
    weights = support / total if total else support
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": cm.tolist(),
        "labels": list(labels),
    }


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A plain-text table: headline numbers, per-class P/R/F1, and the confusion matrix."""
    labels = metrics["labels"]
    width = max(10, *(len(label) for label in labels))
    lines = [title] if title else []
    lines.append(
        f"accuracy {metrics['accuracy']:.4f} | macro P/R/F1 {metrics['precision_macro']:.4f} "
        f"{metrics['recall_macro']:.4f} {metrics['f1_macro']:.4f} | weighted P/R/F1 "
        f"{metrics['precision_weighted']:.4f} {metrics['recall_weighted']:.4f} {metrics['f1_weighted']:.4f} "
        f"| n={metrics['n']}"
    )
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for label in labels:
        c = metrics["per_class"][label]
        lines.append(f"{label:<{width}} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} {c['support']:>8}")
    lines.append("confusion matrix (rows = true, columns = predicted)")
    lines.append(" " * width + " " + " ".join(f"{label[:9]:>9}" for label in labels))
    for label, row in zip(labels, metrics["confusion_matrix"], strict=True):
        lines.append(f"{label:<{width}} " + " ".join(f"{v:>9}" for v in row))
    return "\n".join(lines)
