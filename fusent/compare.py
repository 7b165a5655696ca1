"""``fusent compare``: every head x several seeds on one split and one feature cache, with error bars and
significance against the best head (selected on validation macro-F1; there is no test split to touch)."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .features import FeatureTable
from .fusion import head_uses_states
from .fusion.tokens import DEFAULT_PATCH_GRID, patch_grid_applies, pool_patch_grid
from .pipeline import Prepared, fit
from .stats import mcnemar_exact, one_way_anova, paired_t_test
from .threads import usable_cpus
from .training import TrainConfig, predict_logits


@dataclass
class HeadRun:
    head: str
    seed: int
    metrics: dict[str, Any]
    val_pred: list[int]
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


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

    return replace(prepared, train=pooled(prepared.train), val=pooled(prepared.val))


# What the worker processes read: set before forking, so the features are shared, never pickled.
_JOB: dict[str, Any] = {}


def _run(job: tuple[str, int]) -> HeadRun:
    head, seed = job
    prepared = _JOB["with_states"] if head_uses_states(head) else _JOB["pooled"]
    model, result = fit(prepared, head, replace(_JOB["config"], seed=seed), _JOB["head_kwargs"], progress=False)
    pred = predict_logits(model, prepared.val).argmax(1).tolist()
    return HeadRun(head, seed, result.val_metrics, pred, result.seconds, result.history, model.head.report())


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def default_workers(device: str | None = None) -> int:
    """Parallel training runs for compare: one per core up to 4, sharing the threads (2 single-threaded runs on 2
    cores train these small models faster than one 2-threaded run); 1 on a GPU or where ``fork`` is missing."""
    if (device or "cpu") != "cpu" or torch.cuda.is_available() or "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(4, usable_cpus()))


def run_compare(
    pooled: Prepared,
    with_states: Prepared | None,
    heads: list[str],
    seeds: list[int],
    train_config: TrainConfig,
    head_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[HeadRun]:
    """Train every head with every seed. Attention heads use ``with_states``; the others the lighter ``pooled``.
    Classification only: the table, McNemar and the plots are per class (regression: ``fusent train`` per head).

    ``workers`` > 1 trains that many runs at once in forked processes, each with its share of the CPU threads;
    every run is seeded on its own, so the results are the same as with one worker."""
    if pooled.bundle.task != "classification":
        raise ValueError(f"compare is for classification data; {pooled.bundle.name} is {pooled.bundle.task}")
    if with_states is None and any(head_uses_states(h) for h in heads):
        bad = next(h for h in heads if head_uses_states(h))
        raise ValueError(f"head {bad!r} needs token states: pass features prepared with keep_states=True")
    grid = (head_kwargs or {}).get("patch_grid", DEFAULT_PATCH_GRID)
    _JOB.update(
        pooled=pooled,
        with_states=None if with_states is None else pool_image_patches(with_states, grid),
        config=train_config,
        head_kwargs=head_kwargs,
    )
    jobs = [(head, seed) for head in heads for seed in seeds]
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
    done = {(run.head, run.seed): run for run in runs}
    return [done[job] for job in jobs]


def _report(run: HeadRun, progress: bool) -> HeadRun:
    if progress:
        m = run.metrics
        print(
            f"  {run.head:<16} seed {run.seed}: acc {m['accuracy']:.4f} macro-F1 {m['f1_macro']:.4f} "
            f"({run.seconds:.1f}s)",
            flush=True,
        )
    return run


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std; one value has no spread to report (NaN, not 0)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarise(runs: list[HeadRun], labels: list[str], y_val: list[int]) -> dict[str, Any]:
    """Per head: mean and std over seeds; paired t-test (macro-F1 over seeds) and McNemar (first seed's
    predictions) against the best head by mean validation macro-F1; one-way ANOVA across heads."""
    by_head: dict[str, list[HeadRun]] = {}
    for run in runs:
        by_head.setdefault(run.head, []).append(run)
    f1 = {h: [r.metrics["f1_macro"] for r in rs] for h, rs in by_head.items()}
    best = max(by_head, key=lambda h: statistics.fmean(f1[h]))
    rows = []
    for head, rs in by_head.items():
        row: dict[str, Any] = {"head": head, "seeds": len(rs)}
        for key in ("accuracy", "f1_macro", "f1_weighted"):
            row[key], row[f"{key}_std"] = _mean_std([r.metrics[key] for r in rs])
        for label in labels:
            row[f"f1_{label}"] = statistics.fmean(r.metrics["per_class"][label]["f1"] for r in rs)
        row["train_seconds"] = statistics.fmean(r.seconds for r in rs)
        if head == best:
            row["t_vs_best"], row["p_t_vs_best"], row["p_mcnemar_vs_best"] = np.nan, np.nan, np.nan
        else:
            row["t_vs_best"], row["p_t_vs_best"] = paired_t_test(f1[best], f1[head])
            row["p_mcnemar_vs_best"] = mcnemar_exact(y_val, by_head[best][0].val_pred, rs[0].val_pred)["p"]
        if rs[0].report:
            row["learned"] = rs[0].report
        rows.append(row)
    rows.sort(key=lambda r: -r["f1_macro"])
    anova_f, anova_p = one_way_anova(list(f1.values()))
    return {"best": best, "rows": rows, "anova": {"F": anova_f, "p": anova_p}, "labels": labels}


def _fmt(x: float, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _pm(row: dict[str, Any], key: str) -> str:
    std = row[f"{key}_std"]
    return _fmt(row[key]) if np.isnan(std) else f"{_fmt(row[key])} ± {_fmt(std)}"


def write_report(summary: dict[str, Any], runs: list[HeadRun], out: Path) -> list[Path]:
    """compare.md, compare.csv, compare.json and three plots in ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    labels, rows, best = summary["labels"], summary["rows"], summary["best"]
    lines = [
        f"# fusent compare — best head by validation macro-F1: **{best}**",
        "",
        "| head | accuracy | macro-F1 | weighted-F1 | "
        + " | ".join(f"F1 {lab}" for lab in labels)
        + " | train s | p (t-test vs best) | p (McNemar vs best) |",
        "|---" * (7 + len(labels)) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['head']} | {_pm(r, 'accuracy')} | {_pm(r, 'f1_macro')} | {_pm(r, 'f1_weighted')} | "
            + " | ".join(_fmt(r[f"f1_{lab}"]) for lab in labels)
            + f" | {_fmt(r['train_seconds'], 1)} | {_fmt(r['p_t_vs_best'])} | {_fmt(r['p_mcnemar_vs_best'])} |"
        )
    seeds = rows[0]["seeds"] if rows else 0
    lines += [
        "",
        f"Mean ± std over {seeds} seeds on one stratified validation split. One-way ANOVA across heads (macro-F1): "
        f"F = {_fmt(summary['anova']['F'], 3)}, p = {_fmt(summary['anova']['p'])}. McNemar uses each head's first "
        "seed. Selection is on validation only.",
    ]
    learned = [f"- {r['head']}: {json.dumps(r['learned'])}" for r in rows if r.get("learned")]
    if learned:
        lines += ["", "Learned quantities (first seed):", *learned]
    paths = [out / "compare.md", out / "compare.csv", out / "compare.json"]
    paths[0].write_text("\n".join(lines) + "\n")
    keys = [k for k in rows[0] if k != "learned"] if rows else []
    with paths[1].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths[2].write_text(json.dumps({**summary, "runs": [r.__dict__ for r in runs]}, indent=2, default=float))
    return paths + _plots(summary, runs, out)


def _plots(summary: dict[str, Any], runs: list[HeadRun], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, rows, best = summary["labels"], summary["rows"], summary["best"]
    paths = [out / "bars.png", out / "confusion_best.png", out / "per_class_f1_best.png"]

    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(rows)), 4))
    x = np.arange(len(rows))
    for offset, key in ((-0.2, "accuracy"), (0.2, "f1_macro")):
        spread = [np.nan_to_num(r[f"{key}_std"]) for r in rows]  # one seed: no error bar
        ax.bar(x + offset, [r[key] for r in rows], 0.4, yerr=spread, capsize=3, label=key)
    ax.set_xticks(x, [r["head"] for r in rows], rotation=45, ha="right")
    ax.set_ylabel("validation score (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    first = next(r for r in runs if r.head == best)
    cm = np.asarray(first.metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{best} (seed {first.seed})")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))  # paper 002 Fig. 3
    epochs = [h["epoch"] for h in first.history]
    for label in labels:
        ax.plot(epochs, [h[f"val_f1_{label}"] for h in first.history], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation F1")
    ax.set_title(f"per-class F1 per epoch: {best} (seed {first.seed})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
