"""What ``fusent compare`` leaves in its report folder: compare.md (the table printed to stdout), compare.csv (per
head), compare_runs.csv (per head and seed / fold), compare_predictions.csv (the predictions the per-sample tests
read), compare.tex (a booktabs table), compare.json, split.csv, plots, and compare.html: one self-contained file with
the tables, the plots embedded and the provenance."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .compare import TABLE_METRICS, HeadRun
from .data.split import Split, write_split_file

_NAMES = {k: name for metrics in TABLE_METRICS.values() for k, name in metrics}


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def _pm(row: dict[str, Any], key: str) -> str:
    std = row.get(f"{key}_std", math.nan)
    return _fmt(row[key]) if std is None or math.isnan(std) else f"{_fmt(row[key])} ± {_fmt(std)}"


def _p(x: float) -> str:
    """A p-value: four decimals, or ``< 0.0001``."""
    return "–" if x is None or math.isnan(x) else ("< 0.0001" if x < 1e-4 else f"{x:.4f}")


def main_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-head table (Markdown, HTML and LaTeX render the same cells)."""
    primary, part = summary["primary"], summary["part"]
    metrics = TABLE_METRICS[summary["task"]]
    header = ["head", f"val {_NAMES[primary]}"] + [f"{part} {name}" for _, name in metrics]
    if summary["task"] == "classification":
        header += [f"{part} F1 {label}" for label in summary["labels"]]
    header += ["epoch", "train s"]
    cells = []
    for r in summary["rows"]:
        row = [r["head"] + (" (best)" if r["head"] == summary["best"] else ""), _pm(r, f"val_{primary}")]
        row += [_pm(r, key) for key, _ in metrics]
        if summary["task"] == "classification":
            row += [_fmt(r[f"f1_{label}"]) for label in summary["labels"]]
        row += [_fmt(r["best_epoch"], 1), _fmt(r["train_seconds"], 1)]
        cells.append(row)
    return header, cells


def pairs_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the every-pair table: the paired t-test (t, df, p, Holm) and the per-sample test."""
    name, part = _NAMES[summary["primary"]], summary["part"]
    regression = summary["task"] == "regression"
    header = [
        "A",
        "B",
        f"Δ {part} {name} (A − B)",
        "t",
        "df",
        "p (t-test)",
        "p Holm",
        "Wilcoxon W (n)" if regression else "McNemar only A / only B right",
        "p (per sample)",
        "p Holm",
    ]
    cells = []
    for q in summary["pairs"]:
        sample = (
            f"{_fmt(q['W'], 1)} ({q['n_differ']})" if regression else f"{q['only_a_correct']} / {q['only_b_correct']}"
        )
        cells.append(
            [
                q["a"],
                q["b"],
                _fmt(q["mean_diff"]),
                _fmt(q["t"], 3),
                _fmt(int(q["df"])),
                _p(q["p_t"]),
                _p(q["p_t_holm"]),
                sample,
                _p(q["p_sample"]),
                _p(q["p_sample_holm"]),
            ]
        )
    return header, cells


def _markdown_table(header: list[str], cells: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|", *("| " + " | ".join(c) + " |" for c in cells)]


def notes(summary: dict[str, Any]) -> list[str]:
    """What the table is, in sentences: the part, the replicates, how selection was done, the tests."""
    n, rep, part = len(summary["replicates"]), summary["replicate"], summary["part"]
    name = _NAMES[summary["primary"]]
    if part == "validation":
        where = (
            f"**These are VALIDATION figures**: the data has no test part ({summary['no_test_reason']}); the "
            "validation part that scored them also selected the epochs and the best head, so they are optimistic."
        )
    elif rep == "fold":
        where = (
            f"Test figures: mean ± std over {n} cross-validation folds; each fold is the test part once (scored once, "
            f"{summary['n_scored']} samples in all), after a validation part drawn from the other folds selected "
            "the epoch."
        )
    else:
        where = (
            f"Test figures: mean ± std over {n} seeds (initialisation and batch order) on one split; every run is "
            f"scored once on the held-out test part (n = {summary['n_scored']}) after validation selected its epoch."
        )
    a = summary["anova"]
    lines = [
        where,
        f"The best head is chosen by mean validation {name} only; the test part selects nothing. "
        f"Paired t-tests on {part} {name} pair the runs by {rep} (df = {rep}s − 1); the per-sample tests use "
        f"{summary['per_sample_from']}"
        + (
            " (Wilcoxon signed-rank on per-sample absolute errors)."
            if summary["task"] == "regression"
            else " (exact McNemar on correctness)."
        )
        + " Holm's correction is across all pairs, per test.",
        f"One-way ANOVA across heads ({part} {name}): F({a['df_between']}, {a['df_within']}) = {_fmt(a['F'], 3)}, "
        f"p = {_p(a['p'])}.",
    ]
    if summary["task"] == "regression":
        lines.append(
            "Acc-2 has-0: negative (< 0) vs non-negative (>= 0) over all samples; non-0: negative vs positive with "
            "true score 0 left out. Acc-7: scores clipped to [-3, 3] and rounded."
        )
    return lines


def _provenance_items(provenance: dict[str, Any]) -> list[tuple[str, str]]:
    m = provenance.get("machine", {})
    seeds = provenance.get("seeds")
    folds = provenance.get("folds")
    return [
        ("fusent version", str(provenance.get("fusent_version"))),
        ("git commit", str(provenance.get("git_commit") or "not available (no git checkout)")),
        ("command", str(provenance.get("command"))),
        ("encoders", json.dumps(provenance.get("encoders"))),
        ("data", str(provenance.get("data"))),
        ("data hash", f"{provenance.get('data_hash')} ({provenance.get('data_hash_covers')})"),
        ("split file", str(provenance.get("split_file"))),
        ("split", json.dumps(provenance.get("split"))),
        ("seeds", f"{seeds}" + (f", {folds}-fold cross-validation" if folds else "")),
        (
            "machine",
            f"{m.get('cpu')}, {m.get('cpu_cores')} cores, GPU: {m.get('gpu') or 'none'}, torch threads "
            f"{m.get('torch_threads')}, workers {m.get('workers')}; Python {m.get('python')}, torch {m.get('torch')}",
        ),
        ("wall time", f"{provenance.get('wall_seconds')} s"),
        *([("cost", json.dumps(provenance["cost"]))] if "cost" in provenance else []),
    ]


def markdown(summary: dict[str, Any], provenance: dict[str, Any] | None = None) -> str:
    name = _NAMES[summary["primary"]]
    lines = [
        f"# fusent compare — best head by validation {name} (mean over {summary['replicate']}s): **{summary['best']}**",
        "",
    ]
    lines += [f"> warning: {w}" for w in summary["warnings"]]
    if summary["warnings"]:
        lines.append("")
    lines += _markdown_table(*main_table(summary))
    lines += ["", *notes(summary), "", "## Every pair of heads", ""]
    lines += _markdown_table(*pairs_table(summary))
    learned = [f"- {r['head']}: {json.dumps(r['learned'])}" for r in summary["rows"] if r.get("learned")]
    if learned:
        lines += ["", "Learned quantities (first seed / fold):", *learned]
    if provenance:
        lines += ["", "## Provenance", "", *(f"- {k}: {v}" for k, v in _provenance_items(provenance))]
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}  # fmt: skip


def _tex(text: str) -> str:
    out = "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)
    return out.replace("±", r"$\pm$").replace("–", "--").replace("−", "$-$").replace("Δ", r"$\Delta$")


def latex(summary: dict[str, Any]) -> str:
    """A booktabs table of the per-head figures (needs ``\\usepackage{booktabs}``), best head in bold."""
    header, cells = main_table(summary)
    name = _NAMES[summary["primary"]]
    n, rep = len(summary["replicates"]), summary["replicate"]
    caption = (
        f"{summary['part'].capitalize()} figures, mean $\\pm$ std over {n} {rep}s; best head (bold) by mean "
        f"validation {_tex(name)}."
    )
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for row, r in zip(cells, summary["rows"], strict=True):
        texed = [_tex(c) for c in row]
        if r["head"] == summary["best"]:
            texed[0] = r"\textbf{" + _tex(r["head"]) + "}"
        lines.append(" & ".join(texed) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{caption}}}",
        r"\label{tab:fusent-compare}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(summary: dict[str, Any], provenance: dict[str, Any] | None, images: Sequence[Path]) -> str:
    """One self-contained page: tables, notes, every plot as an embedded base64 PNG, provenance; no external file."""
    name = _NAMES[summary["primary"]]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fusent compare</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}.warn{color:#a00}"
        "img{max-width:100%;border:1px solid #eee;margin:0.5em 0}dt{font-weight:bold}dd{margin:0 0 0.5em 1em}"
        "</style></head><body>",
        f"<h1>fusent compare — best head by validation {html.escape(name)}: {html.escape(summary['best'])}</h1>",
        *(f"<p class='warn'>warning: {html.escape(w)}</p>" for w in summary["warnings"]),
        _html_table(*main_table(summary)),
        *(f"<p>{html.escape(line.replace('**', ''))}</p>" for line in notes(summary)),
        "<h2>Every pair of heads</h2>",
        _html_table(*pairs_table(summary)),
        "<h2>Plots</h2>",
    ]
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(image.stem)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(image.name)}</figcaption></figure>")  # fmt: skip
    if provenance:
        items = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in _provenance_items(provenance))
        parts += ["<h2>Provenance</h2>", f"<dl>{items}</dl>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _runs_rows(runs: Sequence[HeadRun], task: str) -> list[dict[str, Any]]:
    keys = [k for k, _ in TABLE_METRICS[task]]
    rows = []
    for r in runs:
        row: dict[str, Any] = {"head": r.head, "seed": r.seed, "fold": "" if r.fold is None else r.fold}
        row.update(best_epoch=r.best_epoch, train_seconds=round(r.seconds, 2))
        row.update({f"val_{k}": r.val.get(k) for k in keys})
        row.update({f"test_{k}": (r.test or {}).get(k, "") for k in keys})
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else float(value)


def write_report(
    summary: dict[str, Any],
    runs: Sequence[HeadRun],
    out: Path,
    provenance: dict[str, Any] | None = None,
    split: Split | Sequence[Split] | None = None,
) -> list[Path]:
    """Write every report file into ``out`` (see the module docstring); returns the paths, compare.md first.
    ``split`` is written to ``out/split.csv`` and named in the provenance, so another tool can score the same posts."""
    out.mkdir(parents=True, exist_ok=True)
    provenance = dict(provenance) if provenance is not None else None
    paths: list[Path] = []
    if split is not None:
        split_path = write_split_file(out / "split.csv", split)
        if provenance is not None:
            given = provenance.get("split_file")
            provenance["split_file"] = str(split_path) + (f" (read from {given})" if given else "")
        paths.append(split_path)
    images = _plots(summary, runs, out)
    md = out / "compare.md"
    md.write_text(markdown(summary, provenance))
    # the metric columns are of the part named in "part" (test, or validation where there is none)
    per_head = [{"head": r["head"], "part": summary["part"], **{k: v for k, v in r.items() if k != "learned"}}
                for r in summary["rows"]]  # fmt: skip
    files = [
        md,
        _write_csv(out / "compare.csv", per_head),
        _write_csv(out / "compare_runs.csv", _runs_rows(runs, summary["task"])),
        _write_csv(
            out / "compare_predictions.csv",
            [
                {
                    "head": r.head,
                    "seed": r.seed,
                    "fold": "" if r.fold is None else r.fold,
                    "id": i,
                    "true": y,
                    "predicted": p,
                }
                for r in runs
                for i, y, p in zip(r.ids, r.y, r.pred, strict=True)
            ],
        ),
    ]
    (out / "compare.tex").write_text(latex(summary))
    (out / "compare.html").write_text(html_report(summary, provenance, images))
    runs_json = [
        {k: v for k, v in r.__dict__.items() if k not in ("ids", "y", "pred")} for r in runs
    ]  # predictions: compare_predictions.csv
    (out / "compare.json").write_text(
        json.dumps({**summary, "provenance": provenance, "runs": runs_json}, indent=2, default=_plain)
    )
    files += [out / "compare.tex", out / "compare.html", out / "compare.json"]
    return files + paths + images


def zoomed_limits(
    means: Sequence[float], stds: Sequence[float], margin: float = 0.25, bounds: tuple[float, float] = (0.0, 1.0)
) -> tuple[float, float]:
    """y-axis limits hugging the data, from the lowest mean - std to the highest mean + std plus ``margin`` of that
    span on each side (at least 0.01 wide), kept within the metric's ``bounds``: on a 0-1 axis a 0.01 difference
    between heads is invisible."""
    m = np.asarray(means, dtype=float)
    s = np.nan_to_num(np.asarray(stds, dtype=float))
    low, high = float(np.nanmin(m - s)), float(np.nanmax(m + s))
    span = max(high - low, 0.01)
    return max(bounds[0], low - margin * span), min(bounds[1] + 0.02 * span, high + margin * span)


#: the range each plotted metric can take (default 0-1)
_BOUNDS = {"mae": (0.0, math.inf), "corr": (-1.0, 1.0)}


def _plots(summary: dict[str, Any], runs: Sequence[HeadRun], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, best, part, task = summary["rows"], summary["best"], summary["part"], summary["task"]
    shown = ["f1_macro", "accuracy", "roc_auc_macro"] if task == "classification" else ["mae", "corr", "acc2_non0"]
    paths = [out / "bars.png"]
    fig, axes = plt.subplots(1, len(shown), figsize=(max(9, 1.1 * len(rows) * len(shown)), 4))
    x = np.arange(len(rows))
    by_head: dict[str, list[HeadRun]] = {}
    for run in runs:
        by_head.setdefault(run.head, []).append(run)
    for ax, key in zip(axes, shown, strict=True):
        means = [r[key] for r in rows]
        stds = [r[f"{key}_std"] for r in rows]
        if all(math.isnan(v) for v in means):
            ax.set_visible(False)
            continue
        ax.bar(x, means, 0.6, yerr=np.nan_to_num(stds), capsize=3, color="#4c78a8")
        for i, r in enumerate(rows):  # every seed / fold as a dot, so the spread behind the error bar shows
            values = [run.scored.get(key, math.nan) for run in by_head[r["head"]]]
            ax.plot([i] * len(values), values, "o", ms=3, color="black", alpha=0.6)
        ax.set_ylim(*zoomed_limits(means, stds, bounds=_BOUNDS.get(key, (0.0, 1.0))))
        ax.set_xticks(x, [r["head"] for r in rows], rotation=45, ha="right")
        ax.set_title(f"{part} {_NAMES[key]}" + (" (lower is better)" if key == "mae" else ""))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"mean ± std over {len(summary['replicates'])} {summary['replicate']}s (axes zoomed, not from 0)")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    best_runs = by_head[best]
    first = best_runs[0]
    if task == "classification":
        labels = summary["labels"]
        cross_validated = summary["replicate"] == "fold"
        chosen = best_runs if cross_validated else [first]
        cm = sum(np.asarray(r.scored["confusion_matrix"]) for r in chosen)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{best}, {part} ({'all folds' if cross_validated else f'seed {first.seed}'})")
        fig.tight_layout()
        paths.append(out / "confusion_best.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))  # paper 002 Fig. 3
    epochs = [h["epoch"] for h in first.history]
    if task == "classification":
        for label in summary["labels"]:
            ax.plot(epochs, [h[f"val_f1_{label}"] for h in first.history], marker="o", ms=3, label=label)
        ax.set_ylabel("validation F1")
        ax.set_title(f"per-class F1 per epoch: {best} ({summary['replicate']} {first.replicate})")
        paths.append(out / "per_class_f1_best.png")
    else:
        ax.plot(epochs, [h["val_mae"] for h in first.history], marker="o", ms=3, label="MAE")
        ax.set_ylabel("validation MAE")
        ax.set_title(f"validation MAE per epoch: {best} ({summary['replicate']} {first.replicate})")
        paths.append(out / "history_best.png")
    ax.set_xlabel("epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
