"""The small interface every encoder meets: raw batch in, per-sample states and pooled vectors out.

Frozen encoders (pretrained BERT, EfficientNet, ...) are run once and cached. A ``TrainableEncoder`` (the papers'
from-scratch networks) is split in two: its parameter-free preprocessing is what gets cached, and its network
runs inside the model, trained together with the fusion head.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..accel import cache_key_fields, to_device


@dataclass
class ModalityBatch:
    """Inputs of one modality for a batch: padded states, their mask, pooled vectors, and which rows exist."""

    states: torch.Tensor  # [B, L, D] (a trainable encoder's preprocessed input may have more trailing dims)
    mask: torch.Tensor  # [B, L] bool, True = real token/patch
    pooled: torch.Tensor  # [B, D]
    present: torch.Tensor  # [B] bool, False = modality missing for that sample

    def to(self, device: torch.device | str) -> ModalityBatch:
        return ModalityBatch(*(to_device(t, device) for t in (self.states, self.mask, self.pooled, self.present)))


class Encoder(ABC):
    """``encode`` returns one ``[L_i, D]`` state matrix per sample (unpadded) and a ``[B, D]`` pooled tensor."""

    modality: str
    dim: int
    trainable = False  # True: ``encode`` only preprocesses; the network runs (and learns) inside the model
    precision = "auto"  # options.Precision: a frozen encoder on a GPU encodes under autocast (see fusent/accel.py)

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the features: model identity and preprocessing. Saved in checkpoints."""

    @abstractmethod
    def encode(self, items: list[Any]) -> tuple[list[torch.Tensor], torch.Tensor]: ...

    def cache_key(self) -> str:
        fields = {"modality": self.modality, **self.settings(), **cache_key_fields(self), "weights": self.fingerprint()}
        blob = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def fingerprint(self) -> str:
        return ""


class TrainableEncoder(nn.Module, Encoder):
    """An encoder trained from scratch with the fusion head.

    ``encode(items)`` is the parameter-free preprocessing (resized pixels, a waveform, MFCC frames): one
    ``[L_i, ...]`` tensor per sample, which the feature cache stores as states (padded along the first axis), and
    a small pooled summary. ``forward`` runs the network on a padded batch of those inputs and returns states
    ``[B, L, out_dim]`` + pooled ``[B, out_dim]`` for the head. ``augment`` perturbs training batches only.
    """

    trainable = True
    out_dim: int
    #: the TrainConfig field giving this network's learning rate: ``lr`` (the head's) for networks trained from
    #: scratch, e.g. ``image_lr`` for pretrained layers fine-tuned at a rate of their own
    lr_field = "lr"
    #: augment training batches when ``--augment`` is not given (pretrained layers fine-tuned on few images need it)
    augment_by_default = False

    def forward(self, batch: ModalityBatch) -> ModalityBatch:  # pragma: no cover - abstract
        raise NotImplementedError

    def augment(self, batch: ModalityBatch, generator: torch.Generator) -> ModalityBatch:
        """Training-time perturbation of the preprocessed inputs (never applied to validation or prediction)."""
        return batch


_TRAINABLE: dict[tuple[str, str], Callable[..., TrainableEncoder]] = {}
_FINETUNED: dict[str, Callable[..., TrainableEncoder]] = {}


def register_trainable(modality: str, name: str) -> Callable[[type[TrainableEncoder]], type[TrainableEncoder]]:
    """Class decorator naming a trainable encoder, so ``--image-model NAME`` and checkpoints can rebuild it."""

    def wrap(cls: type[TrainableEncoder]) -> type[TrainableEncoder]:
        _TRAINABLE[(modality, name)] = cls
        return cls

    return wrap


def register_finetuned(modality: str) -> Callable[[type[TrainableEncoder]], type[TrainableEncoder]]:
    """Class decorator for the network that fine-tunes a pretrained encoder of ``modality``: settings naming any
    pretrained model with ``finetune_layers`` > 0 rebuild it (the model's name is its own argument)."""

    def wrap(cls: type[TrainableEncoder]) -> type[TrainableEncoder]:
        _FINETUNED[modality] = cls
        return cls

    return wrap


def trainable_names(modality: str) -> list[str]:
    return sorted(name for m, name in _TRAINABLE if m == modality)


def create_trainable(modality: str, settings: dict[str, Any], device: str | None = None) -> TrainableEncoder | None:
    """A freshly initialised trainable encoder from its saved settings (a pretrained one with ``finetune_layers`` > 0
    starts from its pretrained weights), or None when ``settings`` name a frozen one."""
    name, finetune = settings.get("name", ""), int(settings.get("finetune_layers") or 0)
    factory = _TRAINABLE.get((modality, name))
    if factory is not None:
        if finetune:
            raise ValueError(f"{name} is trained from scratch (all its layers learn): drop the fine-tuning option")
        options = {k: v for k, v in settings.items() if k != "name"}
        return factory(**options).to(pick_device(device))
    if finetune and modality in _FINETUNED:
        return _FINETUNED[modality](**settings).to(pick_device(device))
    return None


def folder_fingerprint(path: str | Path) -> str:
    """Identity of a local model folder: file names, sizes and mtimes (cheap, changes when weights do)."""
    path = Path(path)
    if not path.exists():
        return ""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    items = [(str(p.relative_to(path.parent)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def pick_device(device: str | None = None) -> torch.device:
    """The device asked for, refused in one line (OptionError) when this machine has none of that kind."""
    if device:
        from ..options import OptionError, check_device

        kind = str(check_device(str(device))).partition(":")[0]
        if kind == "cuda" and not torch.cuda.is_available():
            raise OptionError("--device cuda: no CUDA device is available here; use --device cpu or leave it out")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise OptionError("--device mps: no Apple GPU is available here; use --device cpu or leave it out")
        return torch.device(str(device))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
