"""Classification metrics computed from the confusion matrix, so every number traces to one table; regression
metrics (paper 001 §4.2) whose binary and 7-class parts reuse the same table."""

from __future__ import annotations

import math
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


def pearson_corr(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Pearson correlation (paper 001 eq. 14); NaN when either side is constant (e.g. an untrained head)."""
    a, b = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else math.nan


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, Any]:
    """CMU-MOSI sentiment-score metrics as paper 001 §4.2 and MMSA report them.

    ``mae`` (eq. 13) and ``corr`` (eq. 14) on the raw scores. ``acc7``: both sides clipped to [-3, 3] and rounded
    to the nearest integer (numpy's round-half-to-even, as MMSA does). Acc-2 / F1 in two conventions papers mix up:
    ``*_has0`` = negative (< 0) vs non-negative (>= 0) over every sample; ``*_non0`` = negative (< 0) vs positive
    (> 0) over the samples whose true score is not exactly 0 (``n_non0`` of them). F1 is the support-weighted F1 of
    the two classes (MMSA's ``f1_score(average="weighted")``).
    """
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")

    def to7(x: np.ndarray) -> np.ndarray:  # class index 0..6 of the rounded, clipped score -3..3
        return (np.round(np.clip(x, -3, 3)) + 3).astype(int)

    seven = classification_metrics(to7(t), to7(p), [str(k) for k in range(-3, 4)])
    has0 = classification_metrics((t >= 0).astype(int), (p >= 0).astype(int), ["negative", "non-negative"])
    nz = t != 0
    non0 = classification_metrics((t[nz] > 0).astype(int), (p[nz] > 0).astype(int), ["negative", "positive"])
    return {
        "n": int(len(t)),
        "mae": float(np.abs(t - p).mean()) if len(t) else math.nan,
        "corr": pearson_corr(t, p),
        "acc7": seven["accuracy"],
        "acc2_has0": has0["accuracy"],
        "f1_has0": has0["f1_weighted"],
        "acc2_non0": non0["accuracy"],
        "f1_non0": non0["f1_weighted"],
        "n_non0": non0["n"],
    }


def format_regression_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """One line per metric family, with the Acc-2 convention spelled out."""
    m = metrics
    lines = [title] if title else []
    lines += [
        f"MAE {m['mae']:.4f} | Corr {m['corr']:.4f} | Acc-7 {m['acc7']:.4f} | n={m['n']}",
        f"Acc-2 has-0 (negative <0 vs non-negative >=0)       {m['acc2_has0']:.4f}  F1 {m['f1_has0']:.4f}  n={m['n']}",
        f"Acc-2 non-0 (negative <0 vs positive >0, 0 left out) {m['acc2_non0']:.4f}  F1 {m['f1_non0']:.4f}  "
        f"n={m['n_non0']}",
    ]
    return "\n".join(lines)
