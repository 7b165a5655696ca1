"""Predictor latency and throughput on real MVSA posts (text + image files, decoded on every call, no cache).

Prints single-post p50/p95/mean (through ``Predictor.predict``), batched posts/s (``predict_batch``), peak RSS and
the machine's load average before and after (a shared machine inflates the figures: re-run when it is idle).

    .venv/bin/python benchmarks/predict_latency.py --checkpoint runs/mvsa/checkpoint [--threads 2]
        [--quantize-text] [--onnx] [--posts 200] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mvsa_single_4k"
DEFAULT_CHECKPOINT = ROOT / "runs" / "mvsa" / "checkpoint"


def mvsa_posts(data: Path, n: int) -> list[dict]:
    """The first ``n`` MVSA posts that have both a text and an image file, as Predictor inputs."""
    from fusent.data.text import decode_text

    posts = []
    for image in sorted((data / "data").glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
        text_file = image.with_suffix(".txt")
        if text_file.exists():
            posts.append({"text": decode_text(text_file.read_bytes())[0], "image": image})
        if len(posts) == n:
            break
    return posts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--posts", type=int, default=200, help="Single-post calls timed (after 10 warm-up calls).")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="Batches timed for posts/s.")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the target: 2 cores).")
    parser.add_argument("--quantize-text", action="store_true", help="int8 dynamic quantisation of the text model")
    parser.add_argument("--onnx", action="store_true", help="the image encoder in ONNX Runtime")
    args = parser.parse_args()
    if not (args.checkpoint / "config.json").exists() or not (args.data / "data").is_dir():
        print(f"skipped: need a checkpoint at {args.checkpoint} and MVSA data at {args.data}", file=sys.stderr)
        return

    import torch
    import transformers

    from fusent.predict import Predictor

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    predictor = Predictor.from_pretrained(
        args.checkpoint, use_cache=False, device="cpu", quantize_text=args.quantize_text, onnx=args.onnx
    )
    cfg = predictor.model.config
    print(
        f"model: {cfg.head} over {cfg.text_encoder.get('name')} + {cfg.image_encoder.get('name')}; "
        f"threads={torch.get_num_threads()} runtime={predictor.runtime}"
    )
    posts = mvsa_posts(args.data, max(args.posts, args.batch_size * args.batches))
    for post in posts[:10]:
        predictor.predict(**post)

    times = []
    for post in posts[: args.posts]:
        start = time.perf_counter()
        predictor.predict(**post)
        times.append((time.perf_counter() - start) * 1000)
    print(
        f"single text+image post ({len(times)} calls): p50 {statistics.median(times):.1f} ms, "
        f"p95 {percentile(times, 0.95):.1f} ms, mean {statistics.fmean(times):.1f} ms"
    )
    for name, keep in (("text only", "text"), ("image only", "image")):
        part = []
        for post in posts[:50]:
            start = time.perf_counter()
            predictor.predict(**{keep: post[keep]})
            part.append((time.perf_counter() - start) * 1000)
        print(f"  {name} (50 calls): p50 {statistics.median(part):.1f} ms")

    n = args.batch_size * args.batches
    predictor.predict_batch(posts[: args.batch_size], batch_size=args.batch_size)  # warm-up at batch shape
    start = time.perf_counter()
    predictor.predict_batch(posts[:n], batch_size=args.batch_size)
    seconds = time.perf_counter() - start
    print(f"batched ({n} posts, batches of {args.batch_size}): {n / seconds:.1f} posts/s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
