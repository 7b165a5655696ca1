"""What ``fusent train`` does, as functions: load and split data, encode through the cache, fit a head."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .data import DatasetBundle, ProblemReport, Sample, load_dataset, split_labelled
from .encoders import (
    DEFAULT_AUDIO_SECONDS,
    DEFAULT_IMAGE_MODEL,
    DEFAULT_TEXT_MODEL,
    Encoder,
    TextEncoder,
    create_audio_encoder,
    create_image_encoder,
)
from .encoders.base import pick_device
from .features import FeatureCache, FeatureTable, build_features
from .fusion import head_uses_states
from .model import FusentModel, ModelConfig, trainable_encoders
from .tasks import get_task
from .training import TrainConfig, TrainResult, train_model

log = logging.getLogger("fusent")


#: What ``audio_model="auto"`` becomes when the dataset has audio: paper 003's network, trained with the head.
DEFAULT_AUDIO_MODEL = "lstm-cnn"


@dataclass
class EncoderSettings:
    """Which encoders produce the features. ``image_model="none"`` drops the image modality (text-only data);
    ``audio_model="auto"`` uses ``DEFAULT_AUDIO_MODEL`` when the dataset has audio, else none. A modality no sample
    of the dataset has is dropped (and noted), so e.g. RAVDESS trains text + audio without an empty image input."""

    text_model: str = DEFAULT_TEXT_MODEL
    text_pooling: str = "mean"
    max_length: int = 128
    finetune_text_layers: int = 0
    image_model: str = DEFAULT_IMAGE_MODEL
    device: str | None = None
    audio_model: str = "auto"
    audio_seconds: float | None = DEFAULT_AUDIO_SECONDS  # clips cropped to this many seconds (None: whole clip)

    def text_config(self) -> dict[str, Any]:
        return {
            "name": self.text_model,
            "pooling": self.text_pooling,
            "max_length": self.max_length,
            "finetune_layers": self.finetune_text_layers,
        }

    def image_config(self) -> dict[str, Any]:
        return {"name": self.image_model}

    def audio_config(self) -> dict[str, Any]:
        return {"name": self.audio_model, "max_seconds": self.audio_seconds}

    def for_dataset(self, samples: Sequence[Sample], report: ProblemReport) -> EncoderSettings:
        """These settings with ``auto`` resolved and the image / audio encoder dropped where no sample has one."""
        changes: dict[str, Any] = {}
        for modality in ("image", "audio"):
            name = getattr(self, f"{modality}_model")
            has = any(getattr(s, modality) is not None for s in samples)
            if name == "auto":
                changes[f"{modality}_model"] = DEFAULT_AUDIO_MODEL if has else "none"
            elif name != "none" and not has:
                changes[f"{modality}_model"] = "none"
                report.note(f"no_{modality}_in_dataset")
        return dataclasses.replace(self, **changes)


def build_encoders(
    text: dict[str, Any], image: dict[str, Any], device: str | None = None, audio: dict[str, Any] | None = None
) -> tuple[dict[str, Encoder | None], TextEncoder | None]:
    """Frozen encoders by modality, plus the text encoder itself when it is fine-tuned inside the model
    (then ``encoders["text"]`` is None: text is encoded at train time, not cached)."""
    encoders: dict[str, Encoder | None] = {}
    text_encoder = None
    if text.get("name", "none") != "none":
        text_encoder = TextEncoder(**text, device=device)
        encoders["text"] = None if text_encoder.finetune_layers > 0 else text_encoder
    if image.get("name", "none") != "none":
        encoders["image"] = create_image_encoder(**image, device=device)
    if audio and audio.get("name", "none") not in ("none", "auto"):
        encoders["audio"] = create_audio_encoder(**audio, device=device)
    if not encoders:
        raise ValueError("no modality left: give a text, image or audio model")
    return encoders, (text_encoder if text_encoder is not None and text_encoder.finetune_layers > 0 else None)


def feature_dims(encoders: dict[str, Encoder | None], text_encoder: TextEncoder | None) -> dict[str, int]:
    """The widths the head sees: a trainable encoder's output, else the cached features'."""
    dims = {m: getattr(e, "out_dim", e.dim) if e.trainable else e.dim for m, e in encoders.items() if e is not None}
    if text_encoder is not None:
        dims["text"] = text_encoder.dim
    return dims


@dataclass
class Prepared:
    """A dataset split and encoded once, ready for any number of heads."""

    bundle: DatasetBundle
    train: FeatureTable
    y_train: torch.Tensor
    val: FeatureTable
    y_val: torch.Tensor
    unlabelled: FeatureTable
    dims: dict[str, int]
    settings: EncoderSettings
    split: dict[str, Any]
    encoder_configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # saved in checkpoints, by modality
    text_encoder: TextEncoder | None = None
    encode_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def prepare(
    data: str | Path,
    settings: EncoderSettings | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 13,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    keep_states: bool = True,
    label_set: str | None = None,
    unlabelled: bool = True,
    labels: list[str] | None = None,
    allow_outside: bool = False,
) -> Prepared:
    """Load ``data``, split its labelled samples, encode every split through the cache.

    The split is the dataset's own when it gives one (``val_fraction`` and ``split_seed`` unused), else seeded and,
    for classification, stratified. ``limit`` keeps only the first N labelled (see ``split_labelled``) and first N
    unlabelled samples (quick experiments and tests). An encoder is built only for modalities the data has: a
    transcript table never loads the image encoder.
    ``keep_states=False`` keeps pooled vectors only: enough for heads without attention, and far less memory.
    ``unlabelled=False`` leaves the samples to predict out (an empty table), for work that never predicts them.
    ``labels`` names the classes (other labels are reported, not trained on); ``allow_outside`` lets a manifest name
    files outside its folder.
    """
    bundle = load_dataset(data, labels=labels, label_set=label_set, allow_outside=allow_outside)
    to_predict = bundle.unlabelled[:limit] if limit else bundle.unlabelled
    train, val = split_labelled(bundle, val_fraction, split_seed, limit)
    settings = (settings or EncoderSettings()).for_dataset([*train, *val, *to_predict], bundle.report)
    encoders, text_encoder = build_encoders(
        settings.text_config(), settings.image_config(), settings.device, settings.audio_config()
    )
    cache = FeatureCache(cache_dir)
    start = time.perf_counter()
    tables = [
        build_features(part, encoders, cache, bundle.report, batch_size, progress, keep_states)
        for part in (train, val, to_predict if unlabelled else [])
    ]
    task = get_task(bundle.task)
    split: dict[str, Any] = {"val_fraction": val_fraction, "seed": split_seed}
    if bundle.given_split is not None:
        split = {"given": True}
    return Prepared(
        bundle=bundle,
        train=tables[0],
        y_train=task.targets(train, bundle.labels),
        val=tables[1],
        y_val=task.targets(val, bundle.labels),
        unlabelled=tables[2],
        dims=feature_dims(encoders, text_encoder),
        settings=settings,
        encoder_configs={
            "text": settings.text_config(),
            "image": settings.image_config(),
            "audio": settings.audio_config(),
            **{m: e.settings() for m, e in encoders.items() if e is not None and e.trainable},
        },
        split={**split, "n_train": len(train), "n_val": len(val), **({"label_set": label_set} if label_set else {})},
        text_encoder=text_encoder,
        encode_seconds=time.perf_counter() - start,
    )


def fit(
    prepared: Prepared,
    head: str,
    train_config: TrainConfig | None = None,
    head_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[FusentModel, TrainResult]:
    """Build ``head`` on the prepared features and train it with the one trainer."""
    train_config = train_config or TrainConfig()
    if head_uses_states(head) and not prepared.train.has_states:
        raise ValueError(f"head {head!r} attends over token/patch states: prepare the data with keep_states=True")
    torch.manual_seed(train_config.seed)  # head initialisation is part of what the seed fixes
    config = ModelConfig(
        labels=prepared.bundle.labels,
        task=prepared.bundle.task,
        head=head,
        dims=prepared.dims,
        head_kwargs=dict(head_kwargs or {}),
        text_encoder=prepared.encoder_configs["text"] if "text" in prepared.dims else {},
        image_encoder=prepared.encoder_configs.get("image", {}) if "image" in prepared.dims else {},
        audio_encoder=prepared.encoder_configs.get("audio", {}) if "audio" in prepared.dims else {},
        training={**asdict(train_config), "split": prepared.split},
    )
    # a private copy: fine-tuning changes the encoder in place, and ``prepared`` must stay reusable across heads
    text_encoder = copy.deepcopy(prepared.text_encoder) if prepared.text_encoder is not None else None
    model = FusentModel(config, text_encoder, trainable_encoders(config)).to(pick_device(prepared.settings.device))
    result = train_model(model, prepared.train, prepared.y_train, prepared.val, prepared.y_val, train_config, progress)
    return model, result


def write_predictions(
    path: str | Path | None, ids: Sequence[str], labels: Sequence[str | float], header: str = "guid,tag"
) -> None:
    """``guid,tag`` rows (the MVSA test file's own format; ``id,score`` with 4-decimal scores for regression) to
    ``path``, or to stdout when path is None/'-'."""
    cells = [f"{v:.4f}" if isinstance(v, float) else v for v in labels]
    rows = [header.split(","), *zip(ids, cells, strict=True)]
    if path is None or str(path) == "-":
        csv.writer(sys.stdout, lineterminator="\n").writerows(rows)
        return
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    atomic_write(path, text.getvalue())
