"""Robustness curves of a trained checkpoint, MultiBench style: its test-part scores as a modality goes missing from
more and more posts, and as each modality's raw input gets noisier. None of the papers report these; a head that
leans on one modality shows it here before it shows it in deployment.

Two kinds of curve, each over ``levels`` in [0, 1] (0 = the clean test part, exactly what ``fusent evaluate``
scores):

``missing``
    The modality is removed from a seeded ``level`` fraction of the posts, exactly as a post without it is handled
    at inference: its features absent (``ModalityBatch.present`` False, no states), the head falling back to what
    it learned for missing inputs. The removed posts are nested (the 50% include the 25%), so a curve moves by the
    posts added, not by a new draw. Level 1 = the test part with that modality absent everywhere.

``noise``
    Every post's raw input of the modality is corrupted, then re-encoded through the checkpoint's own encoders
    (never the feature cache: cache entries are keyed by content, and noisy inputs would only fill it). Seeded per
    post id, so two checkpoints see the same corrupted posts. Severity at ``level`` > 0:

    - image: brought to a 224-pixel shorter side (the resolution ImageNet-C corrupts, so a level means the same for
      a phone photo and a thumbnail), Gaussian blur of sigma ``6 * level`` pixels, then Gaussian pixel noise of
      standard deviation ``0.38 * level`` (pixels in [0, 1]). Level 1 combines ImageNet-C's severity-5 blur (sigma
      6) and severity-5 noise (0.38); level 0.25 is about its severity 1-2.
    - text: each whitespace-separated word dropped with probability ``level``; a post left with no word has no text
      (as a post with an empty text file), so level 1 equals missing text.
    - audio: white Gaussian noise added to the 16 kHz waveform at a signal-to-noise ratio of ``30 - 40 * level`` dB
      (0.25: 20 dB, 0.5: 10 dB, 0.75: 0 dB, 1: -10 dB, noise ten times the clip's power).

    Level 0 is the clean input: its row is the clean score, not re-encoded.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

from .data.audio import SAMPLE_RATE, load_audio
from .data.loading import LoadError
from .data.records import MODALITIES, ProblemReport, Sample

if TYPE_CHECKING:
    from .features import FeatureTable
    from .predict import Predictor

log = logging.getLogger("fusent")

DEFAULT_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
KINDS: tuple[str, ...] = ("missing", "noise")
#: the columns of robustness.csv per task, after model, kind, modality, level, severity
METRICS = {"classification": ("accuracy", "f1_macro"), "regression": ("mae", "corr", "acc2_non0", "acc7")}
#: what the plot draws per task, and its axis label
TITLES = {"missing": "missing modality", "noise": "noisy input"}
PLOTTED = {"classification": ("f1_macro", "macro-F1"), "regression": ("mae", "MAE (lower is better)")}

IMAGE_SIDE = 224  # shorter side the image corruption works at (ImageNet-C's resolution)
IMAGE_BLUR_SIGMA = 6.0  # pixels at level 1 (ImageNet-C Gaussian blur, severity 5)
IMAGE_NOISE_STD = 0.38  # on [0, 1] pixels at level 1 (ImageNet-C Gaussian noise, severity 5)
AUDIO_SNR_DB = (30.0, -40.0)  # SNR = 30 - 40 * level dB


# ----------------------------------------------------------------------------------------------- corruptions


def corrupt_image(image: Image.Image, level: float, rng: np.random.Generator) -> Image.Image:
    """Blur, then pixel noise, at ``level`` (see the module docstring); level 0 returns ``image`` itself."""
    if level <= 0:
        return image
    image = image.convert("RGB")
    scale = IMAGE_SIDE / min(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(IMAGE_BLUR_SIGMA * level))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels = pixels + rng.normal(0.0, IMAGE_NOISE_STD * level, pixels.shape).astype(np.float32)
    return Image.fromarray((np.clip(pixels, 0.0, 1.0) * 255).round().astype(np.uint8))


def drop_words(text: str, level: float, rng: np.random.Generator) -> str | None:
    """Each word dropped with probability ``level``; None when no word is left (a post without text)."""
    if level <= 0:
        return text
    words = text.split()
    kept = [w for w, keep in zip(words, rng.random(len(words)) >= level, strict=True) if keep]
    return " ".join(kept) or None


def snr_db(level: float) -> float:
    return AUDIO_SNR_DB[0] + AUDIO_SNR_DB[1] * level


def add_noise(wave: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """``wave`` plus white Gaussian noise at ``snr_db(level)`` dB of the clip's own power (a silent clip is kept)."""
    if level <= 0:
        return wave
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    if power == 0:
        return wave
    std = math.sqrt(power / 10 ** (snr_db(level) / 10))
    return (wave + rng.normal(0.0, std, wave.shape)).astype(np.float32)


def severity(kind: str, modality: str, level: float) -> str:
    """The level in the units of its corruption, for the CSV and tables."""
    if kind == "missing":
        return f"{level:.0%} of posts without {modality}"
    if level <= 0:
        return "clean"
    if modality == "image":
        return f"blur sigma {IMAGE_BLUR_SIGMA * level:.1f}px + noise std {IMAGE_NOISE_STD * level:.3f}"
    if modality == "text":
        return f"{level:.0%} of words dropped"
    return f"SNR {snr_db(level):.0f} dB"


def _rng(seed: int, modality: str, level: float, sample_id: str) -> np.random.Generator:
    """The same noise for the same post, whatever its position and whichever checkpoint reads it."""
    keys = [seed, MODALITIES.index(modality), round(level * 1_000_000), zlib.crc32(sample_id.encode())]
    return np.random.default_rng(keys)


def corrupt_sample(sample: Sample, modality: str, level: float, seed: int = 0) -> Sample:
    """``sample`` with its ``modality`` input decoded and corrupted at ``level`` (a post whose input cannot be
    decoded keeps it missing, as it already was in the clean run)."""
    item = getattr(sample, modality)
    if item is None or level <= 0:
        return sample
    rng = _rng(seed, modality, level, sample.id)
    if modality == "text":
        return replace(sample, text=drop_words(item, level, rng))
    try:
        if modality == "image":
            from .data.images import load_image

            return replace(sample, image=corrupt_image(load_image(item), level, rng))
        return replace(sample, audio=add_noise(load_audio(item, SAMPLE_RATE).value, level, rng))  # read back as is
    except LoadError:
        return replace(sample, **{modality: None})


# ----------------------------------------------------------------------------------------------- feature tables


def remove_modality(table: FeatureTable, modality: str, rows: Sequence[int]) -> FeatureTable:
    """``table`` with ``modality`` absent from ``rows``, built as the cache builds a post that never had it."""
    from .features import ModalityFeatures

    drop = set(rows)
    out = copy.copy(table)
    if modality == "text":  # a fine-tuned text encoder reads the raw texts
        out.texts = [None if i in drop else t for i, t in enumerate(table.texts)]
    feats = table.modalities.get(modality)
    if feats is not None:
        pooled = [None if i in drop or not feats.present[i] else feats.pooled[i] for i in range(len(table))]
        states = None
        if feats.states is not None:
            states = [None if p is None else feats.states[i] for i, p in enumerate(pooled)]
        out.modalities = {**table.modalities, modality: ModalityFeatures(states, pooled, feats.dim)}
    return out


@contextmanager
def _quiet_problems() -> Iterator[None]:
    """Problems of inputs re-decoded here were reported by the clean run; noisy audio is often clipped on purpose."""
    logger, level = logging.getLogger("fusent"), logging.getLogger("fusent").level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def noisy_table(
    predictor: Predictor,
    samples: Sequence[Sample],
    table: FeatureTable,
    modality: str,
    level: float,
    seed: int = 0,
    progress: bool = False,
) -> FeatureTable:
    """``table`` with ``modality`` re-encoded from corrupted raw inputs, without the feature cache (the other
    modalities keep their clean features)."""
    from .features import build_features

    noisy = [corrupt_sample(s, modality, level, seed) for s in samples]
    out = copy.copy(table)
    if modality == "text":
        out.texts = [s.text for s in noisy]
    encoder = predictor.encoders.get(modality)
    if encoder is not None:  # None: a fine-tuned text encoder, run by the model on ``texts``
        with _quiet_problems():
            fresh = build_features(
                noisy,
                {modality: encoder},
                None,
                ProblemReport(),
                progress=progress,
                keep_states=predictor.model.head.uses_states,
            )
        out.modalities = {**table.modalities, modality: fresh.modalities[modality]}
    return out


# ----------------------------------------------------------------------------------------------- curves


def checkpoint_names(paths: Sequence[str | Path]) -> dict[str, Path]:
    """Name -> checkpoint folder: the run folder's name for ``RUN/checkpoint`` (a run folder itself is accepted),
    made unique by position when two are alike."""
    out: dict[str, Path] = {}
    for i, path in enumerate(map(Path, paths)):
        if not (path / "config.json").is_file() and (path / "checkpoint" / "config.json").is_file():
            path = path / "checkpoint"
        name = path.parent.name if path.name == "checkpoint" and path.parent.name else path.name
        out[name if name not in out else f"{name}-{i + 1}"] = path
    return out


def parse_levels(text: str) -> list[float]:
    """``"0,0.5,1"`` -> sorted unique levels, each in [0, 1]."""
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"levels must be comma-separated numbers in [0, 1], got {text!r}") from None
    return _check_levels(levels)


def _check_levels(levels: Sequence[float]) -> list[float]:
    if not levels or any(not 0.0 <= x <= 1.0 for x in levels):
        raise ValueError(f"levels must be numbers in [0, 1], got {list(levels)}")
    return sorted(set(float(x) for x in levels))


def robustness(
    predictor: Predictor,
    samples: Sequence[Sample],
    labels: Sequence[str],
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    name: str = "model",
    report: ProblemReport | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per (kind, modality the head reads, level): the task's metrics (``METRICS``) and ``n``, plus the
    seconds the row took. The clean features come through the feature cache; noisy ones are encoded afresh."""
    from tqdm.auto import tqdm

    from .model import predict_logits

    levels = _check_levels(levels)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"unknown robustness kind(s) {sorted(unknown)}; use {', '.join(KINDS)}")
    task, temperature = predictor.task, predictor.model.config.temperature
    y = task.targets(samples, labels)
    keys = METRICS[task.name]
    table = predictor.features(samples, report, progress=progress)
    clean = predict_logits(predictor.model, table)
    steps = [(k, m, x) for k in KINDS if k in kinds for m in predictor.modalities for x in levels]
    rows = []
    for kind, modality, level in tqdm(steps, desc=f"robustness {name}", unit="level", disable=not progress):
        start = time.perf_counter()
        if level == 0:
            outputs = clean
        elif kind == "missing":
            order = np.random.default_rng([seed, MODALITIES.index(modality)]).permutation(len(samples))
            removed = remove_modality(table, modality, order[: round(level * len(samples))].tolist())
            outputs = predict_logits(predictor.model, removed)
        else:
            outputs = predict_logits(predictor.model, noisy_table(predictor, samples, table, modality, level, seed))
        metrics = task.metrics(y, outputs, labels, temperature)
        rows.append(
            {
                "model": name,
                "kind": kind,
                "modality": modality,
                "level": level,
                "severity": severity(kind, modality, level),
                **{k: metrics[k] for k in keys},
                "n": len(samples),
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    return rows


def robustness_curves(
    checkpoints: Mapping[str, str | Path],
    data: str | Path,
    *,
    split: str = "test",
    levels: Sequence[float] = DEFAULT_LEVELS,
    kinds: Sequence[str] = KINDS,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """``robustness`` of every checkpoint (name -> folder) on its own ``split`` of ``data``, rows tagged with the
    name, for one plot with a curve per checkpoint. Checkpoints scored on different posts are warned about: their
    curves are then not comparable point by point."""
    from .checkpoint_data import checkpoint_samples
    from .predict import Predictor

    rows: list[dict[str, Any]] = []
    seen: dict[str, frozenset[str]] = {}
    for name, path in checkpoints.items():
        predictor = Predictor.from_pretrained(path, cache_dir, device=device)
        samples, labels, bundle = checkpoint_samples(data, split, predictor.model.config, path)
        ids = frozenset(s.id for s in samples)
        for other in (o for o, other_ids in seen.items() if other_ids != ids):
            log.warning("%s and %s are scored on different %s posts: not comparable point by point", other, name, split)
        seen[name] = ids
        rows += robustness(
            predictor,
            samples,
            labels,
            levels=levels,
            kinds=kinds,
            seed=seed,
            name=name,
            report=bundle.report,
            progress=progress,
        )
    return rows


# ----------------------------------------------------------------------------------------------- outputs


def task_of(rows: Sequence[Mapping[str, Any]]) -> str:
    return "classification" if "f1_macro" in rows[0] else "regression"


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``robustness.csv``: model, kind, modality, level, severity, the task's metrics, n, seconds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain table for stdout."""
    keys = METRICS[task_of(rows)]
    several = len({r["model"] for r in rows}) > 1
    head = (["model"] if several else []) + ["kind", "modality", "level", *keys, "severity"]
    lines = ["  ".join(f"{h:>9}" if h in keys or h == "level" else f"{h:<9}" for h in head)]
    for r in rows:
        cells = ([f"{r['model']:<9}"] if several else []) + [f"{r['kind']:<9}", f"{r['modality']:<9}"]
        cells += [f"{r['level']:>9.2f}", *(f"{r[k]:>9.4f}" for k in keys), r["severity"]]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot_curves(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """``robustness.png``. One checkpoint: a panel per kind, a line per modality. Several: a panel per (kind,
    modality), a line per checkpoint on the same axes. Macro-F1 (MAE for regression) against the level."""
    from .plots import _pyplot

    plt = _pyplot()
    metric, ylabel = PLOTTED[task_of(rows)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    panels = list(dict.fromkeys((r["kind"], r["modality"] if len(models) > 1 else None) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, sharey=True)
    xlabels = {"missing": "fraction of posts without the modality", "noise": "noise level (0 = clean)"}
    for ax, (kind, modality) in zip(axes[0], panels, strict=True):
        mine = [r for r in rows if r["kind"] == kind and modality in (None, r["modality"])]
        for line in dict.fromkeys(r["model"] if modality else r["modality"] for r in mine):
            points = [r for r in mine if (r["model"] if modality else r["modality"]) == line]
            ax.plot([r["level"] for r in points], [r[metric] for r in points], marker="o", label=line)
        ax.set_title(f"{kind} {modality}" if modality else TITLES[kind])
        ax.set_xlabel(xlabels[kind])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(ylabel)  # the panels share it
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
