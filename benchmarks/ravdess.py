"""RAVDESS speech benchmarks (issue 4): feature extraction time, 3-class sentiment from voice, text + audio weights.

1. Feature extraction for every clip (all 1,200, the emotion label set): the cached waveform input of the networks
   trained here and the frozen MFCC / log-mel / STFT features, each twice; the second run reads the cache.
2. 3-class sentiment from voice alone (``audio_only`` head on the network trained here, default ``lstm-cnn``):
   train on actors 01-16, validate (early stopping) on 17-18, test on 19-20 (the adapter's speaker-disjoint split).
3. Text (the fixed neutral sentence, frozen MiniLM) + audio with learned weighted fusion: the weight on audio.
   Target: >= 0.8.

Prints the machine load (2 shared cores while this was written) and every figure; nothing is hard-coded.

    .venv/bin/python benchmarks/ravdess.py [--data ../shared/data/ravdess_speech] [--audio-model lstm-cnn]
        [--epochs 40] [--threads 1] [--cache-dir DIR] [--augment] [--steps 1,2,3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fusent, not whichever one the interpreter has installed
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ravdess_speech"

from fusent.cost import machine_load  # noqa: E402 - after the path insert above


def extraction(data: Path, cache_dir: Path, models: list[str]) -> None:
    from fusent.data import ProblemReport, load_dataset
    from fusent.encoders import create_audio_encoder
    from fusent.features import FeatureCache, encode_modality

    bundle = load_dataset(data, label_set="emotion")
    samples = bundle.labelled
    cache = FeatureCache(cache_dir)
    print(f"[1] feature extraction, {len(samples)} clips, cache {cache_dir} ({machine_load()})", flush=True)
    for name in models:
        encoder = create_audio_encoder(name, device="cpu")
        for run in ("first", "cached"):
            report = ProblemReport()
            start = time.perf_counter()
            features = encode_modality(samples, encoder, cache, report, progress=False)
            seconds = time.perf_counter() - start
            print(
                f"  {name:<9} {run:<6} {seconds:7.1f}s  ({int(features.present.sum())} encoded, {report.summary()})",
                flush=True,
            )


def train(data: Path, cache_dir: Path, audio_model: str, text_model: str, head: str, config) -> tuple:
    from fusent.train_flow import EncoderSettings, evaluate_prepared, fit, prepare

    settings = EncoderSettings(text_model=text_model, image_model="none", audio_model=audio_model, device="cpu")
    prepared = prepare(data, settings, cache_dir=cache_dir, progress=False)
    model, result = fit(prepared, head, config, progress=False)
    scores = evaluate_prepared(model, prepared)
    m, v = scores["test"], scores["validation"]
    per_class = " ".join(f"{k}={c['f1']:.3f}" for k, c in m["per_class"].items())
    print(
        f"  {head} on {'+'.join(prepared.dims)} ({len(prepared.train)} train / {len(prepared.val)} val / "
        f"{len(prepared.test)} test): TEST macro-F1 {m['f1_macro']:.4f}  acc {m['accuracy']:.4f}  [{per_class}]  "
        f"(validation macro-F1 {v['f1_macro']:.4f})  best epoch {result.best_epoch}  train {result.seconds:.0f}s",
        flush=True,
    )
    return model, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--audio-model", default="lstm-cnn", help="a network trained here: lstm-cnn | stft-cnn")
    parser.add_argument("--extract", default="lstm-cnn,mfcc,logmel,stft", help="encoders timed in step 1")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 on a shared machine (two threads spinning on busy cores made small ops ~100x slower)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--steps", default="1,2,3")
    parser.add_argument("--augment", action="store_true", help="pitch shift / time stretch / noise on training clips")
    args = parser.parse_args()
    if not (args.data / "Actor_01").exists():
        print(f"SKIP: {args.data} not found", file=sys.stderr)
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    import torch

    torch.set_num_threads(args.threads)
    from fusent.training import TrainConfig

    steps = set(args.steps.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        if "1" in steps:
            extraction(args.data, cache_dir, args.extract.split(","))
        config = TrainConfig(
            epochs=args.epochs, batch_size=32, lr=1e-3, class_weights="balanced", augment=args.augment, patience=12,
            seed=args.seed,
        )  # fmt: skip
        if "2" in steps:
            print(f"[2] 3-class sentiment from voice, {args.audio_model} trained here ({machine_load()})", flush=True)
            train(args.data, cache_dir, args.audio_model, "none", "audio_only", config)
        if "3" in steps:
            print(f"[3] text (fixed sentence) + audio, learned weighted fusion ({machine_load()})", flush=True)
            model, _ = train(args.data, cache_dir, args.audio_model, "default", "weighted", config)
            weights = model.head.report()["modality_weights"]
            print("  modality weights: " + "  ".join(f"{m}={w:.3f}" for m, w in weights.items()), flush=True)
    print(f"done ({machine_load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
