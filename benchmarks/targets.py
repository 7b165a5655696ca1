"""Issue 13's held-out targets: pick each dataset's `fusent train` configuration on validation, score it once.

For each dataset (MVSA-Single, Memotion 7k, RAVDESS speech, CMU-MOSI transcripts) a small grid of candidate
configurations (text model, audio model, head, learning rate, class weights, dropout) is trained on the train part
and scored on the VALIDATION part only: the test part is removed from the data while candidates are compared, so
nothing can peek at it. The candidate with the best validation figure (macro-F1; MAE for CMU-MOSI, mean over
``--select-seeds``) is then scored ONCE on the test part (the model of the first selection seed), and on MVSA also
by k-fold cross-validation (each fold the test part once); with ``--ensemble N`` also the pick's seeds 0..N-1 on
test, one by one and as a probability-averaging ensemble (reported, never selected on). Prints, per target: the
candidates' validation figures, the pick, its validation and held-out figures, the target and whether it is reached,
the wall times, and the exact `fusent train` command that reproduces each held-out figure.

Split seed 13 everywhere (the CLI default): MVSA and Memotion a stratified 80/10/10 draw; RAVDESS actors 01-16
train, 17-18 validation, 19-20 test; CMU-MOSI its own train rows (validation drawn from them by whole videos) and
its dev rows as the test part. A dataset whose folder is absent under ``--data-root`` is skipped.

    .venv/bin/python benchmarks/targets.py [--only mvsa,memotion,ravdess,mosi] [--threads 1]
        [--data-root ../shared/data] [--select-seeds 13,14,15] [--cv 5] [--ensemble 5] [--skip-slow]
        [--cache-dir DIR] [--quick]

Wall time on 2 shared cores, 1 thread, cached features: MVSA 13 min (with --ensemble 5), Memotion 7 min, CMU-MOSI
2.5 min, RAVDESS 0.5 min with --skip-slow (+10 min for the lstm-cnn trained from scratch). First encodings with mpnet
add about 13 min (MVSA), 8 min (Memotion), 3 min (CMU-MOSI) on one busy thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fusent, not whichever one the interpreter has installed
DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # the default text model (fusent.options.DEFAULT_TEXT_MODEL)


@dataclass(frozen=True)
class Candidate:
    """One `fusent train` configuration: encoder settings, head, training options and head options, each given only
    where it differs from the CLI default (so the printed command is the one a user would type)."""

    head: str
    encoders: dict[str, Any] = field(default_factory=dict)  # EncoderSettings fields
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    head_kwargs: dict[str, Any] = field(default_factory=dict)  # dropout / hidden
    slow: bool = False  # trains an encoder from scratch (minutes a run): left out by --skip-slow

    def label(self) -> str:
        parts = [self.head, short_model(self.encoders.get("text_model", MINILM))]
        if "audio_model" in self.encoders:
            parts.append(self.encoders["audio_model"])
        rest = {k: v for k, v in self.encoders.items() if k not in ("text_model", "audio_model")}
        parts += [f"{k}={v}" for k, v in {**rest, **self.train, **self.head_kwargs}.items()]
        return " ".join(parts)

    def options(self) -> list[str]:
        """The `fusent train` options of this candidate (beyond --data, --seed, --split-seed)."""
        out = ["--head", self.head]
        for key, value in {**self.encoders, **self.train, **self.head_kwargs}.items():
            out += [f"--{key.replace('_', '-')}", str(value)]
        return out


def short_model(name: str) -> str:
    return "minilm" if name == MINILM else name


@dataclass(frozen=True)
class Target:
    """A dataset, its candidates, the metric that selects (on validation) and the held-out goals."""

    key: str
    folder: str
    select: str  # metric chosen on validation
    goals: dict[str, float]  # metric -> threshold on the held-out part
    candidates: tuple[Candidate, ...]
    lower_is_better: tuple[str, ...] = ()
    cv: bool = False  # also k-fold cross-validation of the pick

    def reached(self, metric: str, value: float) -> bool:
        return value <= self.goals[metric] if metric in self.lower_is_better else value >= self.goals[metric]

    def better(self, a: float, b: float) -> bool:
        """Whether validation figure ``a`` beats ``b`` (NaN never wins)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.select in self.lower_is_better else a > b


def grid(heads: Sequence[str], encoders: Sequence[dict], trains: Sequence[dict], **common: Any) -> tuple:
    """Every head x encoder setting x training variant (``common``: training options shared by all)."""
    return tuple(
        Candidate(h, dict(e), {**common, **{k: v for k, v in t.items() if k != "dropout"}}, _dropout(t))
        for e in encoders
        for h in heads
        for t in trains
    )


def _dropout(train: dict) -> dict:
    return {"dropout": train["dropout"]} if "dropout" in train else {}


TEXT_MODELS = ({}, {"text_model": "mpnet"})
TARGETS = {
    "mvsa": Target(
        "mvsa",
        "mvsa_single_4k",
        "f1_macro",
        {"accuracy": 0.77, "f1_macro": 0.68},
        grid(
            ("native_combine", "native_cat", "gated", "weighted_dynamic"),
            TEXT_MODELS,
            ({}, {"lr": 1e-3}, {"class_weights": "sqrt"}),
        )
        + grid(
            ("native_combine", "native_cat", "gated"),
            ({"text_model": "mpnet", "text_pooling": "last4"},),
            ({}, {"class_weights": "sqrt"}),
        ),
        cv=True,
    ),
    "memotion": Target(
        "memotion",
        "memotion_7k",
        "f1_macro",
        {"f1_macro": 0.38},
        grid(
            ("text_only", "native_combine", "gated"),
            TEXT_MODELS,
            ({}, {"lr": 1e-3}),
            class_weights="balanced",
        ),
    ),
    "ravdess": Target(
        "ravdess",
        "ravdess_speech",
        "f1_macro",
        {"f1_macro": 0.75},
        (
            # the default audio model, lstm-cnn, trained from scratch: about 10 minutes a run on one thread
            Candidate("audio_only", {}, {"class_weights": "balanced"}, slow=True),
            *grid(
                ("audio_only",),
                ({"audio_model": "whisper-tiny"},),
                (
                    {},
                    {"lr": 1e-3},
                    {"dropout": 0.3},
                    {"dropout": 0.5},
                    {"lr": 1e-3, "dropout": 0.3},
                    {"lr": 1e-3, "dropout": 0.5},
                ),
                class_weights="balanced",
                epochs=120,
            ),
        ),
    ),
    "mosi": Target(
        "mosi",
        "cmu_mosi_text",
        "mae",
        {"mae": 0.72, "acc2_non0": 0.85},
        grid(
            ("text_only",),
            TEXT_MODELS,
            ({}, {"lr": 1e-3}, {"lr": 1e-3, "dropout": 0.3}, {"lr": 1e-3, "dropout": 0.5}, {"loss": "mse"}),
        )
        + grid(
            ("text_only",),
            ({"text_model": "mpnet", "text_pooling": "last4"},),
            ({"lr": 1e-3, "dropout": 0.3}, {"lr": 1e-3, "dropout": 0.5}),
        ),
        lower_is_better=("mae",),
    ),
}
REPORTED = {
    "classification": ("accuracy", "f1_macro", "f1_weighted"),
    "regression": ("mae", "corr", "acc7", "acc2_non0"),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, checked here: unknown dataset keys and bad numbers are refused before anything loads."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--select-seeds",
        default="13,14,15",
        help="training seeds whose mean validation figure selects (one seed selects noise on small validation parts)",
    )
    parser.add_argument("--cv", type=int, default=5, help="folds of the MVSA cross-validation of the pick (0 = skip)")
    parser.add_argument(
        "--ensemble",
        type=int,
        default=0,
        help="also score on test the mean calibrated probabilities of the pick trained with seeds 0..N-1 "
        "(what the unmerged `fusent ensemble` computes; classification only; 0 = skip)",
    )
    parser.add_argument(
        "--skip-slow", action="store_true", help="leave out candidates that train an encoder from scratch"
    )
    parser.add_argument("--quick", action="store_true", help="only each dataset's first two candidates (a smoke run)")
    args = parser.parse_args(argv)
    keys = [k.strip().lower() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in TARGETS]
    if unknown or not keys:
        parser.error(f"--only takes a comma-separated subset of {','.join(TARGETS)}; got {args.only!r}")
    args.only = keys
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")
    if args.ensemble < 0 or args.ensemble == 1:
        parser.error(f"--ensemble must be 0 (skip) or at least 2 seeds; got {args.ensemble}")
    if args.cv < 0 or args.cv == 1:
        parser.error(f"--cv must be 0 (skip) or at least 2; got {args.cv}")
    try:
        args.select_seeds = [int(s) for s in args.select_seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--select-seeds takes comma-separated integers; got {args.select_seeds!r}")
    if not args.select_seeds:
        parser.error("--select-seeds needs at least one seed")
    return args


def command(target: Target, candidate: Candidate, seed: int, cv: int = 0) -> str:
    """The `fusent train` command that prints the held-out figure of ``candidate``."""
    words = ["fusent", "train", "--data", f"../shared/data/{target.folder}", *candidate.options()]
    words += ["--seed", str(seed), "--split-seed", "13"] + (["--cv", str(cv)] if cv else [])
    return " ".join(words)


def cells(metrics: dict, keys: Sequence[str]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def run_target(target: Target, args: argparse.Namespace) -> dict[str, Any] | None:
    """Select on validation, score the pick once on test (and by CV for MVSA); returns the summary row."""
    from fusent.fusion import head_uses_states
    from fusent.pipeline import EncoderSettings, evaluate_prepared, fit, prepare, prepare_folds
    from fusent.runs import mean_std
    from fusent.training import TrainConfig

    data = args.data_root / target.folder
    if not data.exists():
        print(f"skip {target.key}: no data at {data}")
        return None
    candidates = [c for c in target.candidates if not (args.skip_slow and c.slow)]
    candidates = candidates[:2] if args.quick else candidates
    began = time.perf_counter()
    print(f"\n== {target.key} ({data}); select on validation {target.select}, seeds {args.select_seeds}", flush=True)
    prepared_by: dict[tuple, Any] = {}
    encode_seconds: dict[tuple, float] = {}
    best: tuple[Candidate, float, Any, dict, float] | None = None
    for candidate in candidates:
        key = tuple(sorted(candidate.encoders.items()))
        states = any(head_uses_states(c.head) for c in candidates if c.encoders == candidate.encoders)
        if key not in prepared_by:
            start = time.perf_counter()
            prepared = prepare(
                data,
                EncoderSettings(**candidate.encoders),
                cache_dir=args.cache_dir,
                progress=False,
                keep_states=states,
                unlabelled=False,  # the posts to predict play no part in these figures
            )
            encode_seconds[key] = time.perf_counter() - start
            # the test part leaves the data while candidates are compared: selection cannot see it
            prepared_by[key] = (prepared, dataclasses.replace(prepared, test=None, y_test=None))
            print(f"   data {dict(key) or 'default encoders'}: {prepared.split} ({encode_seconds[key]:.0f}s)")
        prepared, blind = prepared_by[key]
        task_keys = REPORTED[prepared.bundle.task]
        figures, first = [], None
        start = time.perf_counter()
        for seed in args.select_seeds:
            config = TrainConfig(**{**candidate.train, "seed": seed})
            model, result = fit(blind, candidate.head, config, head_kwargs=candidate.head_kwargs, progress=False)
            validation = evaluate_prepared(model, blind)["validation"]
            figures.append(validation[target.select])
            first = first or (model, validation, result.best_epoch)
        train_seconds = (time.perf_counter() - start) / len(args.select_seeds)
        value = mean_std(figures)[0]
        assert first is not None
        print(
            f"   {candidate.label():<58} val {cells(first[1], task_keys)}  (select {value:.4f}; "
            f"epoch {first[2]}; {train_seconds:.0f}s/run)",
            flush=True,
        )
        if best is None or target.better(value, best[1]):
            best = (candidate, value, first[0], first[1], train_seconds)
    assert best is not None
    pick, value, model, validation, train_seconds = best
    prepared = prepared_by[tuple(sorted(pick.encoders.items()))][0]
    task_keys = REPORTED[prepared.bundle.task]
    seed = args.select_seeds[0]
    test = evaluate_prepared(model, prepared)["test"]  # the one look at the test part
    print(f"-> pick: {pick.label()}  (validation {target.select} {value:.4f})")
    print(f"   TEST  {cells(test, task_keys)}   [{command(target, pick, seed)}]", flush=True)
    row = {
        "target": target,
        "pick": pick,
        "value": value,
        "validation": validation,
        "heldout": test,
        "protocol": f"test n={len(prepared.y_test)}",
        "train_seconds": train_seconds,
        "command": command(target, pick, seed),
        "keys": task_keys,
    }
    if args.ensemble and prepared.bundle.task == "classification":
        row["ensemble"] = ensemble(prepared, pick, args.ensemble, task_keys)
        row["ensemble_command"] = (
            f"{command(target, pick, 0)} --out runs/s0, the same with --seed 1..{args.ensemble - 1}, then "
            "`fusent ensemble runs/s*/checkpoint` (unmerged branch h13b)"
        )
    if target.cv and args.cv:
        start = time.perf_counter()
        folds = prepare_folds(
            data,
            args.cv,
            EncoderSettings(**pick.encoders),
            cache_dir=args.cache_dir,
            progress=False,
            keep_states=head_uses_states(pick.head),
        )
        tests = []
        for k, fold in enumerate(folds):
            config = TrainConfig(**{**pick.train, "seed": seed})
            fold_model, _ = fit(fold, pick.head, config, head_kwargs=pick.head_kwargs, progress=False)
            tests.append(evaluate_prepared(fold_model, fold)["test"])
            print(f"   fold {k}: {cells(tests[-1], task_keys)}", flush=True)
        row["cv"] = {k: mean_std([t[k] for t in tests]) for k in task_keys}
        row["cv_command"] = command(target, pick, seed, args.cv)
        line = "  ".join(f"{k} {m:.4f} ± {s:.4f}" for k, (m, s) in row["cv"].items())
        print(f"   {args.cv}-fold CV  {line}  ({time.perf_counter() - start:.0f}s)   [{row['cv_command']}]")
    print(f"   {target.key}: {time.perf_counter() - began:.0f}s wall in all")
    return row


def ensemble(prepared: Any, pick: Candidate, n: int, keys: Sequence[str]) -> dict[str, float]:
    """The pick trained with seeds 0..n-1, each calibrated on validation, its test probabilities averaged: the figure
    of a seed ensemble (nothing is selected on test; each member's epoch and temperature come from validation)."""
    import torch

    from fusent.pipeline import evaluate_prepared, fit
    from fusent.tasks import get_task
    from fusent.training import TrainConfig

    task = get_task(prepared.bundle.task)
    from fusent.runs import mean_std

    start, probabilities, members = time.perf_counter(), [], []
    for seed in range(n):
        model, _ = fit(prepared, pick.head, TrainConfig(**{**pick.train, "seed": seed}), pick.head_kwargs, False)
        scores = evaluate_prepared(model, prepared)
        members.append(scores["test"])
        probabilities.append(task.probabilities(scores["test_outputs"], model.config.temperature))
    single = "  ".join(f"{k} {m:.4f} ± {s:.4f}" for k in keys for m, s in [mean_std([r[k] for r in members])])
    print(f"   seeds 0-{n - 1} one by one, mean ± std: TEST {single}", flush=True)
    mean = torch.stack(probabilities).mean(0)
    test = task.metrics(prepared.y_test, mean.clamp_min(1e-12).log(), prepared.bundle.labels)
    print(f"   ensemble of seeds 0-{n - 1}: TEST {cells(test, keys)}  ({time.perf_counter() - start:.0f}s)", flush=True)
    return test


def summary(rows: list[dict[str, Any]]) -> None:
    """One line per goal: the pick, validation figure, held-out figure(s), target, reached or not."""
    print("\n== targets (held-out: the test part, scored once; CV: mean ± std over folds)")
    for row in rows:
        target: Target = row["target"]
        mean = f" (mean of selection seeds {row['value']:.4f})"
        for metric, goal in target.goals.items():
            sign = "<=" if metric in target.lower_is_better else ">="
            figures = [f"test {row['heldout'][metric]:.4f}"]
            verdict = [target.reached(metric, row["heldout"][metric])]
            if "ensemble" in row:
                figures.append(f"ensemble {row['ensemble'][metric]:.4f}")
            if "cv" in row:
                figures.append(f"CV {row['cv'][metric][0]:.4f} ± {row['cv'][metric][1]:.4f}")
                verdict.append(target.reached(metric, row["cv"][metric][0]))
            mark = "REACHED" if all(verdict) else ("partly" if any(verdict) else "not reached")
            print(
                f"{target.key:<9} {metric:<9} {sign} {goal:<5} {', '.join(figures):<34} val "
                f"{row['validation'][metric]:.4f}{mean if metric == target.select else ''}  {mark:<11} "
                f"{row['pick'].label()}"
            )
        print(f"          test: {row['command']}")
        if "ensemble" in row:
            print(f"          ensemble: {row['ensemble_command']}")
        if "cv" in row:
            print(f"          CV:   {row['cv_command']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = [row for key in args.only if (row := run_target(TARGETS[key], args)) is not None]
    if rows:
        summary(rows)
    one, five, _ = os.getloadavg()
    print(
        f"wall {time.perf_counter() - start:.0f}s, torch threads {torch.get_num_threads()}, load {one:.1f}/{five:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
