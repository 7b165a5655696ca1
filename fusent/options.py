"""Every option fusent takes, its choices and its constraints, in one torch-free module.

The CLI, the REST service and the Python API build the same two dataclasses (``TrainConfig``, ``EncoderSettings``)
and so share one validation, run where the config is built: a misspelt ``--class-weights`` or ``--text-pooling`` is
refused before any data is read or encoded, never after minutes of work or, worse, silently taken as a default.
Choices are ``enum.StrEnum`` so they compare equal to their plain strings (configs written as JSON stay readable)
and Typer lists them in ``--help``. Importing this module must not import torch: ``fusent --help`` reads it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .data.records import ProblemReport, Sample

#: The defaults the encoders and splits use; here so ``--help`` can show them without importing torch or sklearn.
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_IMAGE_MODEL = "efficientnet-lite2"
DEFAULT_AUDIO_SECONDS = 10.0
#: What ``audio_model="auto"`` becomes when the dataset has audio: paper 003's network, trained with the head.
DEFAULT_AUDIO_MODEL = "lstm-cnn"
DEFAULT_VAL_FRACTION, DEFAULT_TEST_FRACTION = 0.1, 0.1  # 80/10/10, as the MVSA papers split


class OptionError(ValueError):
    """A bad option or input location, in one line that says what to do. The CLI prints it and exits with 2 (a usage
    error); ``param`` names the option it is about (``--text-pooling``), where there is one."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ClassWeights(StrEnum):
    """Loss weights per class: none; balanced = n / (C * n_c) as in scikit-learn; sqrt = its square root."""

    NONE = "none"
    BALANCED = "balanced"
    SQRT = "sqrt"


class LossName(StrEnum):
    """auto = ce for classification, l1 for regression; focal is paper 002's."""

    AUTO = "auto"
    CE = "ce"
    FOCAL = "focal"
    L1 = "l1"
    MSE = "mse"


class OptimizerName(StrEnum):
    ADAMW = "adamw"
    SGD = "sgd"


class ScheduleName(StrEnum):
    """The learning rate after warm-up: constant, or a cosine / linear decay to 0."""

    CONSTANT = "constant"
    COSINE = "cosine"
    LINEAR = "linear"


class TextPooling(StrEnum):
    """cls token; mean over tokens; last4 = token mean of the average of the last four layers (paper 003)."""

    CLS = "cls"
    MEAN = "mean"
    LAST4 = "last4"


class Device(StrEnum):
    """Where models run (a bare ``cuda:N`` picks one GPU); left out: cuda when available, else cpu."""

    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(StrEnum):
    """auto: mixed precision on a GPU (bf16, or fp16 with loss scaling where bf16 is missing), float32 on a CPU;
    fp32: float32 everywhere (the reference numbers; slower on a GPU)."""

    AUTO = "auto"
    FP32 = "fp32"


class OutputFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


class Preset(StrEnum):
    """default: the fast configuration (frozen MiniLM + EfficientNet-Lite2 features, one head; minutes on 2 CPU
    cores); best: the stronger one chosen on MVSA validation (``PRESETS``): the mpnet pack, five seeds."""

    DEFAULT = "default"
    BEST = "best"


#: What each preset sets, in ``fusent train`` option names; an option given on the command line wins over it.
#: ``best`` was chosen on MVSA validation against the default and other candidates (docs/benchmarks.md, "Presets").
PRESETS: dict[Preset, dict[str, Any]] = {
    Preset.DEFAULT: {},
    Preset.BEST: {"text_model": "mpnet", "text_pooling": "last4", "class_weights": "sqrt", "seeds": "0,1,2,3,4"},
}


def flag(name: str) -> str:
    """The command-line spelling of a config field, used in messages: ``class_weights`` -> ``--class-weights``."""
    return "--" + name.replace("_", "-")


def choice(enum: type[StrEnum], value: Any, name: str) -> StrEnum:
    """``value`` as a member of ``enum``, or an OptionError listing the choices (one template for every option)."""
    try:
        return enum(value)
    except ValueError:
        options = " | ".join(m.value for m in enum)
        raise OptionError(f"{flag(name)} must be one of {options}; got {value!r}", flag(name)) from None


def check_device(value: str | None, name: str = "device") -> str | None:
    """A device spelling torch will accept (cpu, cuda, cuda:N, mps) or None (= pick); availability is checked where
    the device is used, since asking needs torch."""
    if value is None:
        return None
    if re.fullmatch(r"cpu|mps|cuda(:\d+)?", str(value)):
        return str(value)  # a plain string, also for a Device member
    raise OptionError(f"{flag(name)} must be cpu, cuda, cuda:N or mps (or left out); got {value!r}", flag(name))


def _check_range(obj: Any, name: str, low: float | None = None, high: float | None = None, *, open_low=False) -> None:
    value = getattr(obj, name)
    if value is None:
        return
    too_low = low is not None and (value <= low if open_low else value < low)
    if too_low or (high is not None and value > high):
        if high is None:
            bound = f"{'>' if open_low else '>='} {low:g}"
        else:
            bound = f"in [{low:g}, {high:g}]"
        raise OptionError(f"{flag(name)} must be {bound}; got {value!r}", flag(name))


@dataclass
class TrainConfig:
    """How a head is trained; every value is checked when the config is built (``OptionError`` names the option)."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.01
    patience: int = 8
    seed: int = 13
    class_weights: ClassWeights = ClassWeights.NONE
    loss: LossName = LossName.AUTO  # ce (classification) / l1 (regression); or focal (paper 002), mse
    focal_gamma: float = 2.0
    modality_dropout: float = 0.1  # drop a whole modality of a training sample, so "missing" embeddings learn
    text_lr: float = 3e-5  # for the fine-tuned text layers only
    image_lr: float = 1e-4  # for the fine-tuned image layers only (--finetune-image-layers)
    # training-time augmentation by encoders trained here (flip / rotation / crop ...); None = each encoder's own
    # default (on for fine-tuned pretrained image layers, off for networks trained from scratch)
    augment: bool | None = None
    contrastive_weight: float = 0.0  # > 0 adds paper 001's InfoNCE term between two augmented views (eq. 12)
    temperature: float = 0.2  # InfoNCE tau
    view_dropout: float = 0.2  # token / feature dropout making the views of cached (frozen) features
    optimizer: OptimizerName = OptimizerName.ADAMW  # or SGD with momentum (papers 000 / 003 fine-tune with either)
    momentum: float = 0.9  # SGD only
    schedule: ScheduleName = ScheduleName.CONSTANT  # after warm-up: constant, cosine or linear decay to 0
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs (fractions allowed)

    def __post_init__(self) -> None:
        self.class_weights = choice(ClassWeights, self.class_weights, "class_weights")
        self.loss = choice(LossName, self.loss, "loss")
        self.optimizer = choice(OptimizerName, self.optimizer, "optimizer")
        self.schedule = choice(ScheduleName, self.schedule, "schedule")
        for name in ("epochs", "batch_size"):
            _check_range(self, name, 1)
        for name in ("lr", "text_lr", "image_lr", "temperature"):
            _check_range(self, name, 0, open_low=True)
        for name in ("weight_decay", "patience", "focal_gamma", "contrastive_weight", "warmup_epochs"):
            _check_range(self, name, 0)
        for name in ("modality_dropout", "view_dropout", "momentum"):
            _check_range(self, name, 0, 1)


class AsrMode(StrEnum):
    """off: no transcripts; fill: the transcript is the text of posts with audio and no text; append: it follows
    the caption of every post with audio."""

    off = "off"
    fill = "fill"
    append = "append"


#: Frames sampled per video clip (uniformly in time), pooled over time by the image side.
DEFAULT_VIDEO_FRAMES = 8


@dataclass
class EncoderSettings:
    """Which encoders produce the features. ``image_model="none"`` drops the image modality (text-only data);
    ``audio_model="auto"`` uses ``DEFAULT_AUDIO_MODEL`` when the dataset has audio, else none. A modality no sample
    of the dataset has is dropped (and noted), so e.g. RAVDESS trains text + audio without an empty image input."""

    text_model: str = DEFAULT_TEXT_MODEL
    text_pooling: TextPooling = TextPooling.MEAN
    max_length: int = 128
    finetune_text_layers: int = 0
    image_model: str = DEFAULT_IMAGE_MODEL
    finetune_image_layers: int = 0  # > 0: the image model's last k blocks train with the head (pixels cached)
    device: str | None = None
    audio_model: str = "auto"
    audio_seconds: float | None = DEFAULT_AUDIO_SECONDS  # clips cropped to this many seconds (None: whole clip)
    video_frames: int = DEFAULT_VIDEO_FRAMES  # frames sampled per video clip, pooled over time
    asr: str = "off"  # transcripts of voice notes / soundtracks: off | fill (posts without text) | append
    precision: str = "auto"  # auto: bf16/fp16 autocast on a GPU, float32 on a CPU; fp32: float32 everywhere

    def __post_init__(self) -> None:
        self.precision = choice(Precision, self.precision, "precision").value
        self.text_pooling = choice(TextPooling, self.text_pooling, "text_pooling")
        _check_range(self, "video_frames", 1)
        self.asr = choice(AsrMode, self.asr, "asr").value
        self.device = check_device(self.device)
        _check_range(self, "max_length", 1)
        _check_range(self, "finetune_text_layers", 0)
        _check_range(self, "finetune_image_layers", 0)
        _check_range(self, "audio_seconds", 0, open_low=True)
        for name in ("text_model", "image_model", "audio_model"):
            if not str(getattr(self, name)).strip():
                raise OptionError(f"{flag(name)} must name a model, a folder or none; got an empty value", flag(name))

    def video_config(self) -> dict[str, Any]:
        from .data.video import VideoSettings  # numpy / PIL: not at import time (fast --help)

        return dataclasses.asdict(VideoSettings(frames=self.video_frames))

    def text_config(self) -> dict[str, Any]:
        return {
            "name": self.text_model,
            "pooling": str(self.text_pooling),
            "max_length": self.max_length,
            "finetune_layers": self.finetune_text_layers,
        }

    def image_config(self) -> dict[str, Any]:
        finetune = {"finetune_layers": self.finetune_image_layers} if self.finetune_image_layers else {}
        return {"name": self.image_model, **finetune}

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
