"""The model card the service shows: what a checkpoint reads and answers, what it was trained on and how well it did
on its held-out test part. Read from the checkpoint's config and, when the checkpoint sits in the run folder
``fusent train`` wrote (``RUN/checkpoint``), from that folder's ``metrics.json``: a served model should say how
good it is without its user digging through files. Torch-free (JSON only)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("fusent")

METRICS_NAME = "metrics.json"


def find_metrics(checkpoint: Path) -> Path | None:
    """The metrics file of ``checkpoint``: beside its weights, else its run folder's (only when the checkpoint is that
    folder's ``checkpoint`` subfolder, so an unrelated ``metrics.json`` next to a copied checkpoint is never read)."""
    candidates = [checkpoint / METRICS_NAME]
    if checkpoint.name == "checkpoint":
        candidates.append(checkpoint.parent / METRICS_NAME)
    return next((c for c in candidates if c.is_file()), None)


def read_metrics(checkpoint: Path | None) -> dict[str, Any]:
    """``metrics.json`` as a dict; {} when there is none or it cannot be read (the card then says so, the service
    still starts: a damaged report must not take a working model off line)."""
    path = find_metrics(checkpoint) if checkpoint is not None else None
    if path is None:
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("model card: cannot read %s (%s); the card shows no metrics", path, exc)
        return {}
    return metrics if isinstance(metrics, dict) else {}


def scalars(part: Any) -> dict[str, float]:
    """The single-number metrics of one part (``n``, accuracy, F1, ROC-AUC, ECE, MAE...), per-class tables and
    curves left out; NaN (an undefined metric) and non-numbers dropped, as JSON cannot carry NaN."""
    if not isinstance(part, dict):
        return {}
    return {
        k: v
        for k, v in part.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def model_card(config: Any, modalities: list[str], checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The card of a model with ``config`` (a ``ModelConfig``) whose head reads ``modalities``. ``dataset`` and the
    metrics are None when no run folder records them (a checkpoint copied on its own)."""
    metrics = read_metrics(Path(checkpoint) if checkpoint is not None else None)
    training = config.training if isinstance(config.training, dict) else {}
    split = metrics.get("split") if isinstance(metrics.get("split"), dict) else training.get("split") or {}
    return {
        "dataset": metrics.get("dataset") or None,
        "task": config.task,
        "labels": list(config.labels),
        "head": config.head,
        "head_kwargs": config.head_kwargs,
        "modalities": modalities,
        "encoders": {m: config.encoder_settings(m) for m in modalities},
        "split": {k: v for k, v in split.items() if isinstance(v, str | int | float)},
        "best_epoch": metrics.get("best_epoch"),
        "test_metrics": scalars(metrics.get("test")) or None,
        "validation_metrics": scalars(metrics.get("validation")) or None,
        "temperature": config.temperature,
        "asr": getattr(config, "asr", None),  # an ensemble's members each record their own
        "trained_with": config.fusent_version,
    }
