"""What ``fusent train`` leaves in its run folder: the checkpoint, the split file, validation and test metrics, curve
plots, predictions; and the same for k-fold cross-validation (per-fold and mean ± std metrics, out-of-fold
predictions). Validation selects; the test part is scored once, after training, and feeds nothing back."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import cost, distributed, resume
from .atomic import atomic_write
from .data.split import write_split_file
from .features import FeatureTable
from .model import predict_logits
from .tasks import get_task
from .train_flow import Prepared, evaluate_prepared, fit, write_predictions
from .training import TrainConfig

#: the headline numbers averaged over CV folds, by task
CV_KEYS = {
    "classification": ("accuracy", "f1_macro", "f1_weighted", "roc_auc_macro", "pr_auc_macro", "ece"),
    "regression": ("mae", "corr", "acc7", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"),
}


def write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return float(value)


@dataclass
class TrainRun:
    """The outcome of one ``fusent train``: metrics by part and the files written."""

    head: str
    best_epoch: int
    train_seconds: float
    scores: dict[str, Any]
    learned: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def train_run(
    prepared: Prepared,
    head: str,
    config: TrainConfig,
    head_kwargs: dict[str, Any],
    out: Path,
    *,
    calibrate: bool = True,
    progress: bool = True,
    plots: bool = True,
    resume_from: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainRun:
    """Train, score validation and test, and write the run folder. The trainer's resumable state goes to
    ``out/resume.pt`` after every epoch (``resume_from`` continues from it) and is removed once the run folder is
    complete; ``on_epoch`` is the trainer's per-epoch callback. Under ``torch.distributed`` every rank trains and
    scores; rank 0 alone writes."""
    state_file = out / resume.STATE_FILE
    model, result = fit(
        prepared, head, config, head_kwargs, progress=progress, state_file=state_file, resume_from=resume_from,
        on_epoch=on_epoch,
    )  # fmt: skip
    scores = evaluate_prepared(model, prepared, calibrate)
    test_outputs = scores.pop("test_outputs", None)
    if not distributed.is_main():
        return TrainRun(head, result.best_epoch, result.seconds, scores, model.head.report())
    model.save_pretrained(out / "checkpoint")
    files = [out / "checkpoint"]
    if prepared.parts is not None:  # beside the weights too, so `fusent evaluate CHECKPOINT` finds the same parts
        files.append(write_split_file(out / "split.csv", prepared.parts))
        write_split_file(out / "checkpoint" / "split.csv", prepared.parts)
    report, task = prepared.bundle.report, get_task(prepared.bundle.task)
    metrics = {
        "head": head,
        "task": task.name,
        "dataset": prepared.bundle.name,  # the model card of `fusent serve` shows it
        "split": prepared.split,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "encode_seconds": prepared.encode_seconds,
        **scores,
        "history": result.history,
        "head_report": model.head.report(),
        "data_problems": dict(report.counts),
        "data_notes": dict(report.notes),
    }
    atomic_write(out / "problems.txt", "\n".join(report.messages) + ("\n" if report.messages else ""))
    val_outputs = None if test_outputs is not None else predict_logits(model, prepared.val)
    files += _plots_and_predictions(
        out,
        prepared,
        head,
        test_outputs,
        val_outputs,
        model.config.temperature,
        lambda t: predict_logits(model, t),
        plots,
    )
    costs = cost.current()
    if costs is not None:  # written last: the cost of plots and predictions counts too
        metrics["cost"] = costs.summary()
    files.append(write_json(out / "metrics.json", metrics))
    state_file.unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return TrainRun(head, result.best_epoch, result.seconds, scores, model.head.report(), files)


def _plots_and_predictions(
    out: Path,
    prepared: Prepared,
    title: str,
    test_outputs: torch.Tensor | None,
    val_outputs: torch.Tensor | None,
    temperature: float,
    outputs_of: Callable[[FeatureTable], torch.Tensor],
    plots: bool = True,
) -> list[Path]:
    """ROC / PR / reliability plots of the test part (of validation when there is none) and ``predictions.txt`` for
    the unlabelled samples (``outputs_of`` answers them); a reused run folder never keeps another run's."""
    task, files = get_task(prepared.bundle.task), []
    (out / "predictions.txt").unlink(missing_ok=True)
    if plots and task.name == "classification":
        part, y, outputs = "test", prepared.y_test, test_outputs
        if outputs is None:
            part, y, outputs = "validation", prepared.y_val, val_outputs
        assert y is not None and outputs is not None
        from .plots import curve_plots

        probs = task.probabilities(outputs, temperature).numpy()
        files += curve_plots(y.tolist(), probs, prepared.bundle.labels, out, f"{title}, {part}")
    if len(prepared.unlabelled):
        labels = task.decode(outputs_of(prepared.unlabelled), prepared.bundle.labels)
        write_predictions(out / "predictions.txt", prepared.unlabelled.ids, labels, prepared.bundle.prediction_header)
        files.append(out / "predictions.txt")
    return files


@dataclass
class SeedsRun:
    """``fusent train --seeds``: the members' runs and their ensemble's metrics by part."""

    head: str
    members: dict[int, TrainRun]
    scores: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def seeds_run(
    prepared: Prepared,
    head: str,
    config: TrainConfig,
    head_kwargs: dict[str, Any],
    seeds: Sequence[int],
    out: Path,
    *,
    calibrate: bool = True,
    progress: bool = True,
) -> SeedsRun:
    """One model per training seed on the same split (each a run folder ``out/seed-S``), then their ensemble as the
    checkpoint ``out/checkpoint`` (``fusent.ensemble``: the mean of the members' calibrated probabilities), scored on
    validation and once on the test part. Seeds change only initialisation and batch order, so the ensemble saw no
    data its members did not: its test part is as unseen as theirs."""
    from .ensemble import build_ensemble
    from .model import FusentModel

    members = {
        s: train_run(
            prepared,
            head,
            dataclasses.replace(config, seed=s),
            head_kwargs,
            out / f"seed-{s}",
            calibrate=calibrate,
            progress=progress,
            plots=False,
        )  # fmt: skip
        for s in seeds
    }
    checkpoints = [out / f"seed-{s}" / "checkpoint" for s in seeds]
    build_ensemble(checkpoints, out / "checkpoint", force=True)
    models = [FusentModel.from_pretrained(c) for c in checkpoints]
    task, labels = get_task(prepared.bundle.task), prepared.bundle.labels

    def outputs_of(table: FeatureTable) -> torch.Tensor:
        outputs = [predict_logits(m, table) for m in models]
        return task.combine(outputs, [m.config.temperature for m in models])

    val_outputs = outputs_of(prepared.val)
    scores: dict[str, Any] = {"validation": task.metrics(prepared.y_val, val_outputs, labels, 1.0)}
    test_outputs = None
    if prepared.has_test:
        assert prepared.test is not None and prepared.y_test is not None
        test_outputs = outputs_of(prepared.test)
        scores["test"] = task.metrics(prepared.y_test, test_outputs, labels, 1.0)
    files = [out / "checkpoint"]
    if prepared.parts is not None:
        files.append(write_split_file(out / "split.csv", prepared.parts))
    title = f"ensemble of {len(seeds)} {head}"
    files += _plots_and_predictions(out, prepared, title, test_outputs, val_outputs, 1.0, outputs_of)
    metrics = {
        "head": head,
        "task": task.name,
        "dataset": prepared.bundle.name,
        "ensemble_of_seeds": list(seeds),
        "split": prepared.split,
        "encode_seconds": prepared.encode_seconds,
        **scores,
        "members": {
            str(s): {"best_epoch": r.best_epoch, "train_seconds": r.train_seconds, **r.scores}
            for s, r in members.items()
        },
        "data_problems": dict(prepared.bundle.report.counts),
        **({"cost": costs.summary()} if (costs := cost.current()) is not None else {}),
    }
    files.append(write_json(out / "metrics.json", metrics))
    return SeedsRun(head, members, scores, files)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std over the defined values; one value has no spread (NaN, not 0)."""
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


@dataclass
class CVRun:
    head: str
    folds: list[dict[str, Any]]
    summary: dict[str, tuple[float, float]]
    files: list[Path] = field(default_factory=list)


def cv_run(
    folds: list[Prepared],
    head: str,
    config: TrainConfig,
    head_kwargs: dict[str, Any],
    out: Path,
    *,
    calibrate: bool = True,
    progress: bool = True,
) -> CVRun:
    """Train one model per fold (its validation part selects the epoch), score its test fold once, and write
    ``cv_metrics.json`` (per fold, mean ± std), ``oof_predictions.csv`` (every labelled sample predicted by the
    model that never saw it) and ``split.csv`` (``id,fold,part``). No checkpoint is kept: CV estimates how well the
    recipe does; ``fusent train`` without ``--cv`` makes the model to use."""
    bundle = folds[0].bundle
    task, labels = get_task(bundle.task), bundle.labels
    per_fold, oof_rows = [], []
    for k, prepared in enumerate(folds):
        if progress:
            print(
                f"fold {k + 1}/{len(folds)}: {len(prepared.train)} train / {len(prepared.val)} validation / "
                f"{len(prepared.test or [])} test",
                flush=True,
            )
        model, result = fit(prepared, head, config, head_kwargs, progress=progress)
        scores = evaluate_prepared(model, prepared, calibrate)
        outputs = scores.pop("test_outputs")
        per_fold.append({"fold": k, "best_epoch": result.best_epoch, "train_seconds": result.seconds, **scores})
        assert prepared.test is not None and prepared.y_test is not None
        decoded = task.decode(outputs, labels)
        if task.name == "classification":
            probs = task.probabilities(outputs, model.config.temperature)
            for sid, y, pred, p in zip(prepared.test.ids, prepared.y_test.tolist(), decoded, probs, strict=True):
                oof_rows.append([sid, k, labels[y], pred, *(f"{v:.6f}" for v in p.tolist())])
        else:
            for sid, y, pred in zip(prepared.test.ids, prepared.y_test.tolist(), decoded, strict=True):
                oof_rows.append([sid, k, f"{y:.4f}", f"{pred:.4f}"])
    summary = {key: mean_std([f["test"][key] for f in per_fold]) for key in CV_KEYS[task.name]}
    if not distributed.is_main():
        return CVRun(head, per_fold, summary)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_split_file(out / "split.csv", [p.parts for p in folds if p.parts is not None])]
    header = ["id", "fold", "true", "predicted"] + ([f"p_{label}" for label in labels] if labels else [])
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([header, *oof_rows])
    atomic_write(out / "oof_predictions.csv", text.getvalue())
    files.append(out / "oof_predictions.csv")
    write_json(
        out / "cv_metrics.json",
        {
            "head": head,
            "task": task.name,
            "folds": len(folds),
            "split": {k: v for k, v in folds[0].split.items() if k not in ("fold", "n_train", "n_val", "n_test")},
            "mean_std": {k: {"mean": m, "std": s} for k, (m, s) in summary.items()},
            "per_fold": per_fold,
            "data_problems": dict(bundle.report.counts),
            **({"cost": costs.summary()} if (costs := cost.current()) is not None else {}),
        },
    )
    files.append(out / "cv_metrics.json")
    return CVRun(head, per_fold, summary, files)


def format_cv(run: CVRun, task_name: str) -> str:
    """Per-fold test lines and the mean ± std line."""
    keys = CV_KEYS[task_name]
    lines = [
        f"{run.head}: {len(run.folds)}-fold cross-validation, test fold of each (selection on its validation part)"
    ]
    lines.append("fold  " + "  ".join(f"{k:>13}" for k in keys))
    for f in run.folds:
        lines.append(f"{f['fold']:>4}  " + "  ".join(f"{f['test'][k]:>13.4f}" for k in keys))
    cells = []
    for k in keys:
        m, s = run.summary[k]
        cells.append(f"{m:.4f}" if math.isnan(s) else f"{m:.4f}±{s:.4f}")
    lines.append("mean  " + "  ".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)
