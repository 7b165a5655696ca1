"""``fusent compare``: every head x several seeds (or x cross-validation folds) on one split and one feature cache.

Validation alone selects: it stops each run's training and picks the best head (mean validation score). Each run is
then scored once on the held-out test part, and the table reports those test metrics (mean ± std over seeds or
folds) with significance tests for every pair of heads on them. The report files are written by
``compare_report.py``."""

from __future__ import annotations

import math
import multiprocessing as mp
import statistics
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

import torch

from .cost import stage
from .features import FeatureTable
from .fusion import head_arguments, head_uses_states
from .fusion.tokens import patch_grid_applies, pool_patch_grid
from .model import predict_logits
from .runs import mean_std
from .stats import anova, holm, mcnemar_exact, paired_t, wilcoxon_signed_rank
from .tasks import Task, get_task
from .threads import usable_cpus
from .train_flow import Prepared, evaluate_prepared, fit
from .training import TrainConfig

#: the metrics the table reports per task (key, printed name), the task's selection metric first
TABLE_METRICS: dict[str, list[tuple[str, str]]] = {
    "classification": [
        ("f1_macro", "macro-F1"),
        ("accuracy", "accuracy"),
        ("f1_weighted", "weighted-F1"),
        ("roc_auc_macro", "ROC-AUC"),
        ("ece", "ECE"),
    ],
    "regression": [
        ("mae", "MAE"),
        ("corr", "Corr"),
        ("acc2_has0", "Acc-2 has-0"),
        ("acc2_non0", "Acc-2 non-0"),
        ("acc7", "Acc-7"),
        ("f1_has0", "F1 has-0"),
        ("f1_non0", "F1 non-0"),
    ],
}
#: fewer replicates than this make the paired t-tests and the ANOVA uninformative (a warning says so)
MIN_REPLICATES = 3


@dataclass
class HeadRun:
    """One trained head: validation metrics (they selected its epoch), test metrics (scored once; None when the
    data has no test part), and its predictions on the scored part (test, else validation) for per-sample tests."""

    head: str
    seed: int
    val: dict[str, Any]
    test: dict[str, Any] | None
    ids: list[str]
    y: list[Any]  # targets of the scored part: label indices or scores
    pred: list[Any]  # predicted label index (classification) or score (regression), same order
    seconds: float
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    fold: int | None = None

    @property
    def replicate(self) -> int:
        """What pairs runs of different heads: the fold under cross-validation, else the seed."""
        return self.seed if self.fold is None else self.fold

    @property
    def scored(self) -> dict[str, Any]:
        """The metrics the table reports: test, or validation where the data has no test part."""
        return self.test if self.test is not None else self.val


def pool_image_patches(prepared: Prepared, grid: int) -> Prepared:
    """``prepared`` with every image patch map averaged to ``grid x grid`` once, as the attention heads' own
    ``pool_patch_grid`` would do on each batch (equal to fp16 precision): converting and pooling 81 Lite2 patches
    per batch was a sixth of an attention head's epoch, repeated for every head and seed."""
    if grid <= 0 or "image" not in prepared.train.modalities or not prepared.train.has_states:
        return prepared

    def pooled(table: FeatureTable) -> FeatureTable:
        image = table.modalities["image"]
        if not any(patch_grid_applies(n, grid) for n in image.lengths.tolist()):
            return table  # nothing to pool: already pooled, or not a square patch map
        states = [
            pool_patch_grid(s[None].float(), torch.ones(1, s.shape[0], dtype=torch.bool), grid)[0][0]
            if patch_grid_applies(s.shape[0], grid)
            else s
            for s in image.states or []
        ]
        return replace(table, modalities={**table.modalities, "image": image.with_states(states)})

    test = None if prepared.test is None else pooled(prepared.test)
    return replace(prepared, train=pooled(prepared.train), val=pooled(prepared.val), test=test)


def head_patch_grid(head: str, kwargs: Mapping[str, Any] | None = None) -> int:
    """The image patch grid an attention head reads: its ``patch_grid`` argument (``--head-arg``) or default;
    0 (every patch) for a head without one."""
    return int((kwargs or {}).get("patch_grid", head_arguments(head).get("patch_grid", 0)) or 0)


def states_by_grid(
    with_states: Prepared, heads: Sequence[str], head_kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[int, Prepared]:
    """The token-state features pooled once per distinct patch grid of the attention heads among ``heads`` (so
    ``cmac.patch_grid=2`` next to ``ote``'s default 3 gets both, and no head pools per batch)."""
    grids = {head_patch_grid(h, (head_kwargs or {}).get(h)) for h in heads if head_uses_states(h)}
    return {grid: pool_image_patches(with_states, grid) for grid in sorted(grids)}


@dataclass
class _Replicate:
    """One column of the experiment: the data a run sees (a fold's, or the one split's) and its seed."""

    pooled: Prepared
    states: dict[int, Prepared]
    seed: int
    fold: int | None = None


# What the worker processes read: set before forking, so the features are shared, never pickled.
_JOB: dict[str, Any] = {}


def _run(job: tuple[str, int]) -> HeadRun:
    head, index = job
    rep: _Replicate = _JOB["replicates"][index]
    kwargs = _JOB["head_kwargs"].get(head, {})
    prepared = rep.states[head_patch_grid(head, kwargs)] if head_uses_states(head) else rep.pooled
    model, result = fit(prepared, head, replace(_JOB["config"], seed=rep.seed), kwargs, progress=False)
    scores = evaluate_prepared(model, prepared, _JOB["calibrate"])
    if prepared.has_test:
        assert prepared.test is not None and prepared.y_test is not None
        table, y, outputs = prepared.test, prepared.y_test, scores["test_outputs"]
    else:
        table, y, outputs = prepared.val, prepared.y_val, predict_logits(model, prepared.val)
    pred = outputs.argmax(1).tolist() if prepared.bundle.task == "classification" else outputs[:, 0].tolist()
    return HeadRun(
        head=head,
        seed=rep.seed,
        val=scores["validation"],
        test=scores.get("test"),
        ids=list(table.ids),
        y=y.tolist(),
        pred=pred,
        seconds=result.seconds,
        best_epoch=result.best_epoch,
        history=result.history,
        report=model.head.report(),
        fold=rep.fold,
    )


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def default_workers(device: str | None = None) -> int:
    """Parallel training runs for compare: one per core up to 4, sharing the threads (2 single-threaded runs on 2
    cores train these small models faster than one 2-threaded run); 1 on a GPU or where ``fork`` is missing."""
    if (device or "cpu") != "cpu" or torch.cuda.is_available() or "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(4, usable_cpus()))


StatesArg = Prepared | Mapping[int, Prepared] | None


def _grids(with_states: StatesArg, heads: Sequence[str], head_kwargs: Mapping[str, Mapping[str, Any]]):
    if with_states is None:
        bad = next((h for h in heads if head_uses_states(h)), None)
        if bad is not None:
            raise ValueError(f"head {bad!r} needs token states: pass features prepared with keep_states=True")
        return {}
    if isinstance(with_states, Prepared):
        return states_by_grid(with_states, heads, head_kwargs)
    return dict(with_states)


def run_compare(
    pooled: Prepared,
    with_states: StatesArg,
    heads: list[str],
    seeds: list[int],
    train_config: TrainConfig,
    head_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    workers: int = 1,
    calibrate: bool = True,
) -> list[HeadRun]:
    """Train every head with every seed on one split. Attention heads use ``with_states`` (features with token
    states, or those already pooled per patch grid by ``states_by_grid``); the others the lighter ``pooled``.
    ``head_kwargs`` maps a head to its own arguments.

    ``workers`` > 1 trains that many runs at once in forked processes, each with its share of the CPU threads;
    every run is seeded on its own, so the results are the same as with one worker."""
    kwargs = dict(head_kwargs or {})
    grids = _grids(with_states, heads, kwargs)
    replicates = [_Replicate(pooled, grids, seed) for seed in seeds]
    return _run_all(replicates, heads, train_config, kwargs, progress, workers, calibrate)


def run_compare_cv(
    folds: Sequence[Prepared],
    folds_with_states: Sequence[StatesArg] | None,
    heads: list[str],
    train_config: TrainConfig,
    head_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
    workers: int = 1,
    calibrate: bool = True,
) -> list[HeadRun]:
    """Train every head once per cross-validation fold (with ``train_config.seed``): the fold plays the seed's
    part, and each run is scored on its fold's test part, so the pairwise tests pair by fold."""
    kwargs = dict(head_kwargs or {})
    states = list(folds_with_states) if folds_with_states is not None else [None] * len(folds)
    if len(states) != len(folds):
        raise ValueError(f"{len(folds)} folds but {len(states)} folds with token states")
    replicates = [
        _Replicate(p, _grids(s, heads, kwargs), train_config.seed, k)
        for k, (p, s) in enumerate(zip(folds, states, strict=True))
    ]
    return _run_all(replicates, heads, train_config, kwargs, progress, workers, calibrate)


@stage("train")  # in forked workers this includes each run's scoring
def _run_all(
    replicates: list[_Replicate],
    heads: list[str],
    train_config: TrainConfig,
    head_kwargs: dict[str, Any],
    progress: bool,
    workers: int,
    calibrate: bool,
) -> list[HeadRun]:
    _JOB.update(replicates=replicates, config=train_config, head_kwargs=head_kwargs, calibrate=calibrate)
    jobs = [(head, k) for head in heads for k in range(len(replicates))]
    # the slow attention heads first, so no worker is left idle behind one long run at the end
    schedule = sorted(jobs, key=lambda job: not head_uses_states(job[0]))
    workers = max(1, min(workers, len(jobs)))
    try:
        if workers == 1:
            runs = [_report(_run(job), progress) for job in schedule]
        else:
            threads = max(1, torch.get_num_threads() // workers)
            context = mp.get_context("fork")
            with ProcessPoolExecutor(workers, context, initializer=_set_threads, initargs=(threads,)) as pool:
                runs = [_report(run, progress) for run in pool.map(_run, schedule)]
    finally:
        _JOB.clear()
    done = {(run.head, run.replicate): run for run in runs}
    keys = [rep.seed if rep.fold is None else rep.fold for rep in replicates]
    return [done[(head, keys[k])] for head, k in jobs]  # in job order, not finishing order


def _report(run: HeadRun, progress: bool) -> HeadRun:
    """One progress line per finished run, on stderr (stdout carries the table)."""
    if progress:
        which = f"seed {run.seed}" if run.fold is None else f"fold {run.fold}"
        keys = ("accuracy", "f1_macro") if "f1_macro" in run.val else ("mae", "corr")
        shown = " ".join(f"{k} {run.val[k]:.4f}" for k in keys)
        test = "" if run.test is None else " | test " + " ".join(f"{k} {run.test[k]:.4f}" for k in keys)
        print(f"  {run.head:<16} {which}: val {shown}{test} ({run.seconds:.1f}s)", file=sys.stderr, flush=True)
    return run


def _per_sample(runs: list[HeadRun], cross_validated: bool) -> tuple[list[str], list[Any], list[Any]]:
    """The predictions a per-sample test compares: every fold's test part together under cross-validation (each
    sample predicted once, by the model that never saw it), else the first seed's."""
    chosen = runs if cross_validated else runs[:1]
    ids = [i for r in chosen for i in r.ids]
    return ids, [v for r in chosen for v in r.y], [v for r in chosen for v in r.pred]


def no_test_reason(split_info: Mapping[str, Any]) -> str:
    """Why a split has no test part, in the user's terms."""
    kind = split_info.get("kind")
    if kind == "file":
        return f"the split file {split_info.get('file')} has no test rows"
    if kind == "given":
        return "the dataset's own split has no labelled test rows and --test-fraction is 0"
    return "--test-fraction 0 left no test part"


def summarise(
    runs: list[HeadRun], labels: list[str], task_name: str, split_info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Per head: validation score and the scored part's metrics, mean and std over seeds (folds); the best head by
    mean validation score; for every pair of heads a paired t-test on the selection metric over seeds (folds), a
    per-sample test (McNemar on correctness for classes, Wilcoxon on absolute error for scores), each with Holm's
    correction across the pairs; a one-way ANOVA across heads; and warnings a reader must see."""
    task = get_task(task_name)
    primary = task.monitor
    by_head: dict[str, list[HeadRun]] = {}
    for run in runs:
        by_head.setdefault(run.head, []).append(run)
    for rs in by_head.values():
        rs.sort(key=lambda r: r.replicate)
    cross_validated = all(r.fold is not None for r in runs)
    part = "test" if all(r.test is not None for r in runs) else "validation"
    val_score = {h: statistics.fmean(task.score(r.val) for r in rs) for h, rs in by_head.items()}
    order = sorted(by_head, key=lambda h: -val_score[h])
    best = order[0]
    warnings, reason = _warnings(by_head, cross_validated, part, split_info)
    first = by_head[best][0]
    return {
        "task": task.name,
        "part": part,
        "no_test_reason": reason,
        "replicate": "fold" if cross_validated else "seed",
        "replicates": sorted({r.replicate for r in runs}),
        "primary": primary,
        "best": best,
        "rows": [_head_row(head, by_head[head], task, labels) for head in order],
        "pairs": _pairs(by_head, order, task, cross_validated),
        "anova": {"metric": primary, **anova([[r.scored[primary] for r in by_head[h]] for h in order])},
        "labels": labels,
        "n_scored": sum(len(r.y) for r in by_head[best]) if cross_validated else len(first.y),
        "per_sample_from": "every fold's test part (out-of-fold)" if cross_validated else f"seed {first.seed}",
        "warnings": warnings,
    }


def _head_row(head: str, rs: list[HeadRun], task: Task, labels: list[str]) -> dict[str, Any]:
    """One head's line of the table: validation score and scored-part metrics, mean and std over replicates."""
    primary = task.monitor
    row: dict[str, Any] = {"head": head, "replicates": len(rs)}
    row[f"val_{primary}"], row[f"val_{primary}_std"] = mean_std([r.val[primary] for r in rs])
    for key, _ in TABLE_METRICS[task.name]:
        row[key], row[f"{key}_std"] = mean_std([r.scored.get(key, math.nan) for r in rs])
    if task.name == "classification":
        for label in labels:
            row[f"f1_{label}"] = statistics.fmean(r.scored["per_class"][label]["f1"] for r in rs)
    row["best_epoch"] = statistics.fmean(r.best_epoch for r in rs)
    row["train_seconds"] = statistics.fmean(r.seconds for r in rs)
    if rs[0].report:
        row["learned"] = rs[0].report
    return row


def _pairs(
    by_head: dict[str, list[HeadRun]], order: list[str], task: Task, cross_validated: bool
) -> list[dict[str, Any]]:
    """Every pair of heads: a paired t-test over replicates and a per-sample test, both Holm-corrected."""
    primary, pairs = task.monitor, []
    for a, b in combinations(order, 2):
        ra = {r.replicate: r for r in by_head[a]}
        rb = {r.replicate: r for r in by_head[b]}
        common = sorted(set(ra) & set(rb))
        t = paired_t([ra[k].scored[primary] for k in common], [rb[k].scored[primary] for k in common])
        pair: dict[str, Any] = {"a": a, "b": b, "metric": primary, "pairs": len(common)}
        pair.update(mean_diff=t["mean_diff"], t=t["t"], df=t["df"], p_t=t["p"])
        ids_a, y, pred_a = _per_sample(by_head[a], cross_validated)
        ids_b, _, pred_b = _per_sample(by_head[b], cross_validated)
        if ids_a != ids_b:
            raise ValueError(f"{a} and {b} were scored on different samples: their predictions cannot be paired")
        if task.name == "classification":
            m = mcnemar_exact(y, pred_a, pred_b)
            pair.update(sample_test="McNemar", only_a_correct=m["only_a_correct"], only_b_correct=m["only_b_correct"])
            pair["p_sample"] = m["p"]
        else:
            err_a = [abs(p - t) for p, t in zip(pred_a, y, strict=True)]
            err_b = [abs(p - t) for p, t in zip(pred_b, y, strict=True)]
            w = wilcoxon_signed_rank(err_a, err_b)
            pair.update(sample_test="Wilcoxon |error|", W=w["W"], n_differ=w["n"], p_sample=w["p"])
            pair["mean_abs_error_diff"] = statistics.fmean(err_a) - statistics.fmean(err_b)
        pair["n_samples"] = len(y)
        pairs.append(pair)
    for key in ("p_t", "p_sample"):
        for pair, adjusted in zip(pairs, holm([p[key] for p in pairs]), strict=True):
            pair[f"{key}_holm"] = adjusted
    return pairs


def _warnings(
    by_head: dict[str, list[HeadRun]], cross_validated: bool, part: str, split_info: Mapping[str, Any] | None
) -> tuple[list[str], str | None]:
    """What a reader of the table must see: too few replicates for the tests, or validation figures only."""
    replicate = "fold" if cross_validated else "seed"
    n_rep = min(len(rs) for rs in by_head.values())
    warnings = []
    if n_rep < MIN_REPLICATES and len(by_head) > 1:
        fix = "--cv 3 or more" if cross_validated else "--seeds 3 or more"
        warnings.append(
            f"only {n_rep} {replicate}{'s' if n_rep != 1 else ''} per head: the paired t-tests have {n_rep - 1} "
            f"degree(s) of freedom and the ANOVA almost none, so their p-values are not meaningful (use {fix})"
        )
    reason = None
    if part == "validation":
        reason = no_test_reason(split_info or {})
        warnings.append(
            f"no test part ({reason}): the table reports VALIDATION figures, the same part that selected the epochs "
            "and the best head, so they are optimistic"
        )
    return warnings, reason
