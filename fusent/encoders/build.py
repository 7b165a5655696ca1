"""The encoders a configuration names, built once for training and inference alike (``train_flow`` and ``predict``
both sit above this)."""

from __future__ import annotations

from typing import Any

from ..accel import set_precision
from ..cost import stage
from .audio import create_audio_encoder
from .base import Encoder
from .image import create_image_encoder
from .text import TextEncoder


@stage("encode")  # loading the encoders' weights is part of what encoding costs
def build_encoders(
    text: dict[str, Any],
    image: dict[str, Any],
    device: str | None = None,
    audio: dict[str, Any] | None = None,
    precision: str = "auto",
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
    set_precision(encoders, precision)  # on a GPU frozen encoders run under autocast (fusent/accel.py)
    return encoders, (text_encoder if text_encoder is not None and text_encoder.finetune_layers > 0 else None)


def feature_dims(encoders: dict[str, Encoder | None], text_encoder: TextEncoder | None) -> dict[str, int]:
    """The widths the head sees: a trainable encoder's output, else the cached features'."""
    dims = {m: getattr(e, "out_dim", e.dim) if e.trainable else e.dim for m, e in encoders.items() if e is not None}
    if text_encoder is not None:
        dims["text"] = text_encoder.dim
    return dims
