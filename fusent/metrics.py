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


def binary_roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the positives ``y`` (bool): the probability that a random positive
    outscores a random negative, ties counting half (the Mann-Whitney U form); NaN when one side is empty."""
    y, score = np.asarray(y, dtype=bool), np.asarray(score, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    start = 0
    while start < len(score):  # average ranks within ties
        end = start
        while end + 1 < len(score) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """PR-AUC as average precision, ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (scikit-learn's
    definition, no interpolation); NaN without positives."""
    y = np.asarray(y, dtype=bool)
    if not y.any():
        return math.nan
    recall, precision = pr_points(y, np.asarray(score, dtype=float))
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    last = np.r_[np.diff(score) != 0, True]
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(1, (~y).sum())], np.r_[0.0, tp / max(1, y.sum())]


def pr_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct threshold (the last row of each tie group is one)."""
    order = np.argsort(-score, kind="mergesort")
    y, score = y[order], score[order]
    last = np.r_[np.diff(score) != 0, True]
    tp = np.cumsum(y)[last]
    return tp / max(1, y.sum()), tp / (np.arange(len(y)) + 1)[last]


def expected_calibration_error(y_true: Sequence[int], probs: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): confidence = top probability, in ``bins`` equal-width bins over (0, 1];
    ``sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|``."""
    probs = np.asarray(probs, dtype=float)
    if len(probs) == 0:
        return math.nan
    confidence, correct = probs.max(1), probs.argmax(1) == np.asarray(y_true)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        rows = which == b
        if rows.any():
            total += rows.sum() / len(probs) * abs(correct[rows].mean() - confidence[rows].mean())
    return float(total)


def reliability_bins(y_true: Sequence[int], probs: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per confidence bin: its range, count, mean confidence and accuracy (the reliability diagram's bars)."""
    probs = np.asarray(probs, dtype=float)
    confidence, correct = probs.max(1), probs.argmax(1) == np.asarray(y_true)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        rows = which == b
        out.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "n": int(rows.sum()),
                "confidence": float(confidence[rows].mean()) if rows.any() else math.nan,
                "accuracy": float(correct[rows].mean()) if rows.any() else math.nan,
            }
        )
    return out


def probability_metrics(y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """What the predicted probabilities are worth beyond the argmax: one-vs-rest ROC-AUC and PR-AUC (average
    precision) per class and their macro means over the classes present, ECE, and negative log-likelihood."""
    y, probs = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=float)
    roc = {label: binary_roc_auc(y == k, probs[:, k]) for k, label in enumerate(labels)}
    pr = {label: average_precision(y == k, probs[:, k]) for k, label in enumerate(labels)}

    def macro(values: dict[str, float]) -> float:
        defined = [v for v in values.values() if not math.isnan(v)]
        return float(np.mean(defined)) if defined else math.nan

    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean()) if len(y) else math.nan
    return {
        "roc_auc_macro": macro(roc),
        "pr_auc_macro": macro(pr),
        "roc_auc_per_class": roc,
        "pr_auc_per_class": pr,
        "ece": expected_calibration_error(y, probs),
        "nll": nll,
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
    if "roc_auc_macro" in metrics:
        lines.append(
            f"ROC-AUC macro {metrics['roc_auc_macro']:.4f} | PR-AUC macro {metrics['pr_auc_macro']:.4f} | "
            f"ECE {metrics['ece']:.4f} | NLL {metrics['nll']:.4f}"
        )
    auc = metrics.get("roc_auc_per_class")
    lines.append(
        f"{'class':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}"
        + (f" {'ROC-AUC':>9}" if auc else "")
    )
    for label in labels:
        c = metrics["per_class"][label]
        lines.append(
            f"{label:<{width}} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} {c['support']:>8}"
            + (f" {auc[label]:>9.4f}" if auc else "")
        )
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
