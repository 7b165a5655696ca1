"""Held-out figures of the default `fusent train` recipe: the test part of the default split, and k-fold CV.

Prints, for one dataset and head (default: MVSA, the default head and encoders):
1. validation and TEST metrics of the README's main command (seed 13, split seed 13): validation selected the
   epoch and the temperature, the test part was scored once;
2. the test part over several training seeds (mean ± std), the same split;
3. k-fold cross-validation (default 5): each fold is the test part once; mean ± std over folds.
Every feature comes from the cache after the first run.

    .venv/bin/python benchmarks/heldout.py [--data ../shared/data/mvsa_single_4k] [--head native_combine]
        [--seeds 5] [--cv 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mvsa_single_4k"
KEYS = {
    "classification": ("accuracy", "f1_macro", "f1_weighted", "roc_auc_macro", "ece"),
    "regression": ("mae", "corr", "acc7", "acc2_has0", "acc2_non0"),
}


def line(metrics: dict, keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--head", default="native_combine")
    parser.add_argument("--seeds", type=int, default=5, help="training seeds on the default split (0 = skip)")
    parser.add_argument("--cv", type=int, default=5, help="folds (0 = skip)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skip: no data at {args.data}")
        return 0
    logging.basicConfig(level=logging.ERROR)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from fusent.fusion import head_uses_states
    from fusent.runs import mean_std
    from fusent.train_flow import EncoderSettings, evaluate_prepared, fit, prepare, prepare_folds
    from fusent.training import TrainConfig

    start = time.perf_counter()
    states = head_uses_states(args.head)
    prepared = prepare(args.data, EncoderSettings(), cache_dir=args.cache_dir, progress=False, keep_states=states)
    keys = KEYS[prepared.bundle.task]
    print(f"{args.data.name}: {prepared.split} (encoding {prepared.encode_seconds:.1f}s)")

    model, result = fit(prepared, args.head, TrainConfig(), progress=False)
    scores = evaluate_prepared(model, prepared)
    print(f"1. default command ({args.head}, seed 13, split seed 13), best epoch {result.best_epoch}:")
    print(f"   validation  {line(scores['validation'], keys)}")
    print(f"   TEST        {line(scores['test'], keys)}")

    if args.seeds:
        runs = []
        for seed in range(args.seeds):
            model, _ = fit(prepared, args.head, TrainConfig(seed=seed), progress=False)
            runs.append(evaluate_prepared(model, prepared)["test"])
        cells = [f"{k} {m:.4f} ± {s:.4f}" for k in keys for m, s in [mean_std([r[k] for r in runs])]]
        print(f"2. TEST over seeds 0-{args.seeds - 1}, same split: " + "  ".join(cells))

    if args.cv:
        folds = prepare_folds(
            args.data, args.cv, EncoderSettings(), cache_dir=args.cache_dir, progress=False, keep_states=states
        )
        tests = []
        for k, fold in enumerate(folds):
            model, _ = fit(fold, args.head, TrainConfig(), progress=False)
            tests.append(evaluate_prepared(model, fold)["test"])
            print(f"   fold {k}: {line(tests[-1], keys)}", flush=True)
        cells = [f"{k} {m:.4f} ± {s:.4f}" for k in keys for m, s in [mean_std([r[k] for r in tests])]]
        print(f"3. {args.cv}-fold CV (seed 13, split seed 13): " + "  ".join(cells))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wall {time.perf_counter() - start:.0f}s, peak RSS {peak:.0f} MB, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
