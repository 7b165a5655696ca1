"""A fusion head plus the encoders trained with it (a fine-tuned text encoder, from-scratch networks); saved as
safetensors weights + a JSON config."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from . import __version__
from .accel import autocast
from .atomic import atomic_target, atomic_write
from .data.records import TaskName
from .encoders.base import TrainableEncoder, create_trainable, pick_device
from .encoders.text import TextEncoder
from .features import FeatureTable, ModalityBatch
from .fusion import create_head
from .tasks import get_task

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a trained model and the features it expects."""

    labels: list[str]
    head: str
    dims: dict[str, int]
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    text_encoder: dict[str, Any] = field(default_factory=dict)  # TextEncoder settings + finetune_layers
    image_encoder: dict[str, Any] = field(default_factory=dict)
    audio_encoder: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # recorded for provenance, incl. the split
    fusent_version: str = __version__
    task: TaskName = "classification"  # regression: ``labels`` is empty and the head has one output, the score
    temperature: float = 1.0  # divides the logits before the softmax: fitted on validation (temperature scaling)
    video: dict[str, Any] = field(default_factory=dict)  # how clips become frames (data/video.py VideoSettings)
    asr: str = "off"  # transcripts of voice notes / soundtracks (fusent/asr.py AsrMode)
    precision: str = "auto"  # options.Precision: autocast on a GPU (auto) or float32 everywhere (fp32)

    @property
    def finetune_text(self) -> bool:
        return int(self.text_encoder.get("finetune_layers", 0)) > 0

    @property
    def num_outputs(self) -> int:
        return get_task(self.task).num_outputs(self.labels)

    def encoder_settings(self, modality: str) -> dict[str, Any]:
        return getattr(self, f"{modality}_encoder", {}) or {}


class FusentModel(nn.Module):
    """``forward(inputs, texts) -> logits`` (``[B, 1]`` scores for regression). With a fine-tuned text encoder, text
    states are computed here from the raw texts; a trainable encoder turns its cached preprocessed input into states
    here; every other modality arrives as cached features."""

    def __init__(
        self,
        config: ModelConfig,
        text_encoder: TextEncoder | None = None,
        encoders: dict[str, TrainableEncoder] | None = None,
    ):
        super().__init__()
        self.config = config
        self.head = create_head(config.head, config.dims, config.num_outputs, **config.head_kwargs)
        if config.finetune_text and text_encoder is None:
            raise ValueError("a fine-tuned text model needs its TextEncoder")
        self.text_encoder = text_encoder if config.finetune_text else None
        self.encoders = nn.ModuleDict(encoders or {})

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_text(self, texts: list[str | None]) -> ModalityBatch:
        enc = self.text_encoder
        assert enc is not None
        present = torch.tensor([bool(t) for t in texts], device=self.device)
        tokens = {k: v.to(self.device) for k, v in enc.tokenize([t or "" for t in texts]).items()}
        states, pooled = enc(tokens["input_ids"], tokens["attention_mask"])
        return ModalityBatch(states=states, mask=tokens["attention_mask"].bool(), pooled=pooled, present=present)

    def _run_encoder(self, modality: str, batch: ModalityBatch) -> ModalityBatch:
        """A trained-here encoder on its inputs; a batch where no row has the modality gets what a frozen encoder's
        features give then (one masked zero state, zero pooled vectors), as its network cannot run on no input."""
        encoder = self.encoders[modality]
        if bool(batch.present.any()):
            return encoder(batch)
        rows, device = batch.present.shape[0], batch.present.device
        return ModalityBatch(
            states=torch.zeros(rows, 1, encoder.out_dim, device=device),
            mask=torch.zeros(rows, 1, dtype=torch.bool, device=device),
            pooled=torch.zeros(rows, encoder.out_dim, device=device),
            present=batch.present,
        )

    def encode(self, inputs: dict[str, ModalityBatch], texts: list[str | None] | None) -> dict[str, ModalityBatch]:
        """What the head reads: cached features as they are, trained encoders applied to their inputs."""
        encoded = {m: self._run_encoder(m, b) if m in self.encoders else b for m, b in inputs.items()}
        if self.text_encoder is None:
            return encoded
        if texts is None:
            raise ValueError("this model fine-tunes its text encoder: pass the raw texts")
        return {**encoded, "text": self.encode_text(texts)}

    def augment(
        self, inputs: dict[str, ModalityBatch], generator: torch.Generator, switch: bool | None = True
    ) -> dict[str, ModalityBatch]:
        """Training-time augmentation, by the trainable encoders that define one (cached features pass unchanged).
        ``switch`` None: only encoders that augment by default (fine-tuned pretrained layers)."""

        def on(m: str, batch: ModalityBatch) -> bool:
            if m not in self.encoders or not bool(batch.present.any()):
                return False
            return self.encoders[m].augment_by_default if switch is None else switch

        return {m: self.encoders[m].augment(b, generator) if on(m, b) else b for m, b in inputs.items()}

    def forward(self, inputs: dict[str, ModalityBatch], texts: list[str | None] | None = None) -> torch.Tensor:
        return self.head(self.encode(inputs, texts))

    def loss(
        self,
        inputs: dict[str, ModalityBatch],
        texts: list[str | None] | None,
        target: torch.Tensor,
        loss_fn: nn.Module,
    ) -> torch.Tensor:
        """The training loss, as the head defines it (by default ``loss_fn(logits, target)``)."""
        return self.head.training_loss(self.encode(inputs, texts), target, loss_fn)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        with atomic_target(directory / WEIGHTS_NAME) as tmp:
            save_model(self, str(tmp))
        atomic_write(directory / CONFIG_NAME, json.dumps(asdict(self.config), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> FusentModel:
        """Load without pickle: JSON config, then safetensors tensors into a freshly built model."""
        directory = Path(directory)
        check_checkpoint(directory)
        saved = json.loads((directory / CONFIG_NAME).read_text())
        if "ensemble" in saved:
            raise ValueError(f"{directory} is an ensemble of checkpoints: load it with Predictor.from_pretrained")
        config = ModelConfig(**saved)
        text_encoder = None
        if config.finetune_text:
            text_encoder = TextEncoder(**config.text_encoder, device=device)
        model = cls(config, text_encoder, trainable_encoders(config, device))
        load_model(model, str(directory / WEIGHTS_NAME), strict=True)
        return model.to(pick_device(device)).eval()


def check_checkpoint(directory: Path) -> None:
    """Refuse, in one line that says what to pass instead, a folder that is not a checkpoint: most often the run
    folder ``fusent train`` wrote, whose checkpoint is its ``checkpoint`` subfolder."""
    from .options import OptionError

    if (directory / CONFIG_NAME).is_file():
        return
    if (directory / "checkpoint" / CONFIG_NAME).is_file():
        raise OptionError(f"{directory} is a run folder, not a checkpoint: pass {directory / 'checkpoint'}")
    what = "does not exist" if not directory.exists() else f"is not a fusent checkpoint (no {CONFIG_NAME})"
    raise OptionError(f"{directory} {what}: pass the checkpoint folder a `fusent train` run wrote (RUN/checkpoint)")


def trainable_encoders(config: ModelConfig, device: str | None = None) -> dict[str, TrainableEncoder]:
    """Freshly initialised networks for the modalities whose encoder trains with the head."""
    built = {m: create_trainable(m, config.encoder_settings(m), device) for m in config.dims}
    return {m: enc for m, enc in built.items() if enc is not None}


def move_batch(inputs: dict[str, ModalityBatch], device: torch.device) -> dict[str, ModalityBatch]:
    return {m: b.to(device) for m, b in inputs.items()}


def batch_texts(table: FeatureTable, index: torch.Tensor) -> list[str | None]:
    return [table.texts[i] for i in index.tolist()]


def padded_lengths(model: FusentModel, table: FeatureTable) -> torch.Tensor:
    """Per sample, what a batch of ``model`` pads it to: the table's sequence lengths, plus its token count when
    the text encoder is fine-tuned (its texts are tokenized per batch, not cached)."""
    lengths = table.sequence_lengths()
    if model.text_encoder is not None:
        lengths = lengths + model.text_encoder.token_counts(table.texts)
    return lengths


@torch.no_grad()
def predict_logits(model: FusentModel, table: FeatureTable, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    order = torch.sort(padded_lengths(model, table), stable=True).indices  # similar lengths together: less padding
    out = torch.zeros(len(table), model.config.num_outputs)
    with autocast(model.device, model.config.precision):  # float32 on a CPU; bf16 / fp16 on a GPU (fusent/accel.py)
        for index in order.split(batch_size):
            out[index] = model(move_batch(table.batch(index), model.device), batch_texts(table, index)).float().cpu()
    return out
