"""Peak memory of ``fusent predict`` on a generated manifest of 20,000 and 200,000 rows: streaming must keep it
flat (the manifest is read, predicted and written ``--batch-size`` rows at a time).

Everything is built in a temporary folder: a CSV manifest of short posts (text only, or with ``--image-fraction``
of the rows pointing at one of 16 small JPEGs), and a checkpoint over a tiny randomly initialised BERT (and ViT),
built the way the tests build theirs, so the run measures the streaming machinery rather than a large encoder.
Each ``fusent predict`` runs in its own process; its peak RSS is the kernel's high-water mark (ru_maxrss).
``--in-memory`` also runs the previous path (the manifest in a folder, loaded whole) at the same sizes.

    .venv/bin/python benchmarks/stream_predict.py [--rows 20000,200000] [--image-fraction 0] [--threads 1]
        [--batch-size 256] [--in-memory]
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's fusent, and the tests' tiny models

#: Runs ``fusent.cli`` with the given arguments and prints its peak RSS (MB) on the last stderr line.
CHILD = """
import resource, runpy, sys
sys.argv = ["fusent", *sys.argv[1:]]
try:
    runpy.run_module("fusent.cli", run_name="__main__")
finally:
    print(f"PEAK_RSS_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}", file=sys.stderr)
"""


def build_checkpoint(root: Path, images: bool) -> Path:
    """A random ``text_only`` (or text + image ``native_combine``) checkpoint over tiny local encoders."""
    from conftest import TinyModels, _save_tiny_bert, _save_tiny_vit
    from test_predict import make_checkpoint

    tiny = TinyModels(bert=root / "bert", vit=root / "vit", resnet=root / "unused")
    _save_tiny_bert(tiny.bert)
    if images:
        _save_tiny_vit(tiny.vit)
        return make_checkpoint(root, tiny, "native_combine", ("text", "image"))
    return make_checkpoint(root, tiny, "text_only", ("text",))


def write_manifest(path: Path, rows: int, image_fraction: float) -> None:
    """``rows`` unlabelled posts of 3-12 words from the tiny vocabulary; a fraction with an image."""
    from conftest import VOCAB, jpeg_bytes

    words = VOCAB[5:]
    if image_fraction:
        (path.parent / "img").mkdir(exist_ok=True)
        for k in range(16):
            (path.parent / "img" / f"{k}.jpg").write_bytes(jpeg_bytes((16 * k, 128, 255 - 16 * k), (64, 48), seed=k))
    rng = random.Random(0)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "image", "label"])
        for k in range(rows):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
            image = f"img/{k % 16}.jpg" if rng.random() < image_fraction else ""
            writer.writerow([f"post{k:07d}", text, image, ""])


def run_predict(checkpoint: Path, data: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one ``fusent predict`` process."""
    command = [sys.executable, "-c", CHILD, "predict", str(checkpoint), "--data", str(data), "--out", str(out)]
    command += ["--threads", str(args.threads), "-q"]
    if data.is_file():
        command += ["--batch-size", str(args.batch_size)]
    else:  # the in-memory path goes through the feature cache: keep it in the temporary folder
        command += ["--cache-dir", str(out.parent / "cache")]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"fusent predict failed:\n{done.stderr[-3000:]}")
    peak = next(line for line in reversed(done.stderr.splitlines()) if line.startswith("PEAK_RSS_MB"))
    return seconds, float(peak.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="20000,200000", help="Comma-separated manifest sizes.")
    parser.add_argument("--image-fraction", type=float, default=0.0, help="Rows with an image (tiny ViT).")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--in-memory", action="store_true", help="Also run the whole-manifest path.")
    args = parser.parse_args()
    sizes = [int(n) for n in args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="fusent-stream-") as tmp:
        root = Path(tmp)
        checkpoint = build_checkpoint(root / "model", args.image_fraction > 0)
        print(
            f"checkpoint: {checkpoint.name} (tiny random encoders); batch size {args.batch_size}, "
            f"threads {args.threads}, image fraction {args.image_fraction}",
            flush=True,
        )
        print("| path | rows | seconds | rows/s | peak RSS MB | predictions |", flush=True)
        print("|---|---|---|---|---|---|", flush=True)
        for n in sizes:
            folder = root / f"m{n}"
            folder.mkdir()
            manifest = folder / "manifest.csv"
            write_manifest(manifest, n, args.image_fraction)
            paths = [("streaming", manifest)] + ([("in-memory", folder)] if args.in_memory else [])
            for name, data in paths:
                out = folder / f"{name}.txt"
                seconds, peak = run_predict(checkpoint, data, out, args)
                lines = sum(1 for _ in out.open()) - 1
                print(f"| {name} | {n} | {seconds:.1f} | {n / seconds:.0f} | {peak:.0f} | {lines} |", flush=True)


if __name__ == "__main__":
    main()
