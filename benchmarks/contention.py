"""Encoding throughput alone vs next to a competing CPU-bound process, as a ratio, in one run.

Each measurement is a fresh process that encodes the same in-memory inputs for ``--seconds`` (the packaged
EfficientNet-Lite2 on 32 synthetic 320x240 images, or MiniLM on 64 short texts with ``--encoder text``), first alone,
then while ``--competitors`` busy-loop processes (``while True: pass``) run. Two set-ups are measured:

* ``before``: torch imported first with its defaults (OpenMP's default wait policy: idle workers spin);
* ``fusent``: fusent imported first (OpenMP waits passively) and ``configure_threads()`` (pools sized from
  the CPUs this process may use that no other thread is running on when it starts).

The ratio is contended / alone throughput (the median over ``--repeats`` back-to-back pairs); "per fair share"
divides it by the share of the CPUs the encoder can expect (its threads over all runnable threads), so 1.0 means
the competitor cost exactly its fair share (the issue's goal: at least 0.6). On a machine other jobs share,
"alone" is not idle: the load average is printed.

    .venv/bin/python benchmarks/contention.py [--encoder image|text] [--seconds 10] [--competitors 1] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "while True: pass"


def worker(mode: str, encoder_name: str, seconds: float) -> None:
    """Runs in the measured process: prints one JSON line with samples/s and the thread count."""
    sys.path.insert(0, str(ROOT))
    if mode == "before":
        import torch  # noqa: F401 - loaded before fusent: OpenMP keeps its default (spinning) wait policy
    import torch

    import fusent  # noqa: F401 - sets OMP_WAIT_POLICY=PASSIVE when torch is not loaded yet

    if mode == "fusent":
        from fusent.threads import configure_threads

        configure_threads()
    import numpy as np
    from PIL import Image

    if encoder_name == "image":
        from fusent.encoders import create_image_encoder

        encoder = create_image_encoder("efficientnet-lite2", device="cpu")
        rng = np.random.default_rng(0)
        items = [Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for _ in range(32)]
        batch = 8
    else:
        from fusent.encoders import DEFAULT_TEXT_MODEL, TextEncoder

        encoder = TextEncoder(DEFAULT_TEXT_MODEL, device="cpu")
        words = "what a great day at the beach with my dog and the sun was out all afternoon".split()
        items = [" ".join(words[: 4 + k % 12]) for k in range(64)]
        batch = 32
    with torch.inference_mode():
        encoder.encode(items[:batch])  # warm-up: allocator, kernels
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for i in range(0, len(items), batch):
                encoder.encode(items[i : i + batch])
                done += len(items[i : i + batch])
        elapsed = time.perf_counter() - start
    print(json.dumps({"per_s": done / elapsed, "threads": torch.get_num_threads()}))


def measure(mode: str, args: argparse.Namespace, competitors: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(competitors)]
    try:
        time.sleep(0.5 if busy else 0)
        command = [
            sys.executable,
            __file__,
            "--worker",
            mode,
            "--encoder",
            args.encoder,
            "--seconds",
            str(args.seconds),
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    if done.returncode != 0:
        raise SystemExit(f"worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=["image", "text"], default="image")
    parser.add_argument("--seconds", type=float, default=10.0, help="Encoding time per measurement.")
    parser.add_argument("--competitors", type=int, default=1, help="Busy-loop processes run next to the encoder.")
    parser.add_argument("--modes", default="before,fusent")
    parser.add_argument("--repeats", type=int, default=1, help="Alone / contended pairs per set-up (medians).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.encoder, args.seconds)
        return
    sys.path.insert(0, str(ROOT))
    from fusent.threads import usable_cpus

    cpus = usable_cpus()
    print(f"usable CPUs {cpus}; load average before {os.getloadavg()[0]:.2f}; {args.encoder} encoder", flush=True)
    print("| set-up | threads alone / contended | alone /s | with competitor /s | ratio | per fair share |", flush=True)
    print("|---|---|---|---|---|---|", flush=True)
    for mode in args.modes.split(","):
        # alone and contended back to back, --repeats times: a drifting background load hits both alike
        pairs = [(measure(mode, args, 0), measure(mode, args, args.competitors)) for _ in range(args.repeats)]
        threads, busy_threads = pairs[0][0]["threads"], pairs[0][1]["threads"]
        # CPUs the encoder can expect: alone, min(threads, cpus); contended, the share of all runnable threads its
        # threads alone would get (the competitor's fair cost, whatever thread count the contended run chose)
        fair = min(threads, cpus * threads / (threads + args.competitors)) / min(threads, cpus)
        alone = statistics.median(a["per_s"] for a, _ in pairs)
        contended = statistics.median(c["per_s"] for _, c in pairs)
        ratio = statistics.median(c["per_s"] / a["per_s"] for a, c in pairs)
        cells = f"{threads} / {busy_threads} | {alone:.1f} | {contended:.1f} | {ratio:.2f} | {ratio / fair:.2f}"
        print(f"| {mode} | {cells} |", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
