"""Full MVSA run with the offline default encoders (MiniLM + EfficientNet-Lite2, frozen): VALIDATION figures.

A diagnostic of heads on the validation part (the part that selects epochs); held-out figures come from
``benchmarks/heldout.py`` (test part and k-fold CV).

Prints encode time, then per head: validation accuracy / macro-F1 / weighted-F1 / per-class F1 and train time,
a logistic-regression reference on the same pooled features, and peak RSS. Run twice: the second run reads
every feature from the cache.

    .venv/bin/python benchmarks/mvsa_full.py [--data ../shared/data/mvsa_single_4k] [--split-seeds 13,7]
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mvsa_single_4k"


def logistic_reference(prepared) -> dict[str, float]:
    """Plain logistic regression on standardised [text; image] pooled vectors: the bar the heads must beat."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fusent.metrics import classification_metrics

    def x(table):
        return np.concatenate([table.modalities[m].pooled.numpy() for m in ("text", "image")], axis=1)

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.05))
    clf.fit(x(prepared.train), prepared.y_train.numpy())
    pred = clf.predict(x(prepared.val))
    return classification_metrics(prepared.y_val.tolist(), pred.tolist(), prepared.bundle.labels)


def run_heads(prepared, heads: list[str], rows: dict[str, list[dict]]) -> None:
    from fusent.train_flow import fit

    for head in heads:
        _, result = fit(prepared, head, progress=False)
        rows.setdefault(head, []).append({**result.val_metrics, "seconds": result.seconds})
        m = result.val_metrics
        per_class = " ".join(f"{k}={v['f1']:.3f}" for k, v in m["per_class"].items())
        print(
            f"  {head:<16} acc {m['accuracy']:.4f}  macro-F1 {m['f1_macro']:.4f}  weighted-F1 "
            f"{m['f1_weighted']:.4f}  [{per_class}]  best epoch {result.best_epoch}  train {result.seconds:.1f}s",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--heads", default="text_only,image_only,native_cat,native_combine,ote,cmac,hstec")
    parser.add_argument("--split-seeds", default="13", help="comma list: one stratified 80/20 split per seed")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"SKIP: {args.data} not found", file=sys.stderr)
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from fusent.fusion import head_uses_states
    from fusent.train_flow import prepare

    rows: dict[str, list[dict]] = {}
    for split_seed in [int(s) for s in args.split_seeds.split(",")]:
        heads = args.heads.split(",")
        # pooled-only features for the heads that need nothing more; token states loaded only for attention heads
        for keep_states in (False, True):
            group = [h for h in heads if head_uses_states(h) == keep_states]
            if not group and keep_states:
                continue
            start = time.perf_counter()
            prepared = prepare(
                args.data, split_seed=split_seed, cache_dir=args.cache_dir, progress=False, keep_states=keep_states
            )
            print(
                f"split seed {split_seed}: encode/load ({'token states' if keep_states else 'pooled only'}) "
                f"{time.perf_counter() - start:.1f}s for {len(prepared.train)}+{len(prepared.val)}+"
                f"{len(prepared.unlabelled)} samples; {prepared.bundle.report.summary()}",
                flush=True,
            )
            if not keep_states:
                ref = logistic_reference(prepared)
                rows.setdefault("logreg (reference)", []).append({**ref, "seconds": 0.0})
                m = ref
                print(
                    f"  {'logreg (ref)':<16} acc {m['accuracy']:.4f}  macro-F1 {m['f1_macro']:.4f}  weighted-F1 "
                    f"{m['f1_weighted']:.4f}",
                    flush=True,
                )
            run_heads(prepared, group, rows)
            del prepared

    print("\nmean over split seeds (validation, 20% stratified):")
    print(f"{'head':<20} {'accuracy':>9} {'macro-F1':>9} {'wtd-F1':>9} {'train s':>8}")
    for head, runs in rows.items():

        def mean(key, runs=runs):
            return statistics.fmean(r[key] for r in runs)

        print(
            f"{head:<20} {mean('accuracy'):>9.4f} {mean('f1_macro'):>9.4f} {mean('f1_weighted'):>9.4f} "
            f"{mean('seconds'):>8.1f}"
        )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
