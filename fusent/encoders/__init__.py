"""Text and image encoders behind one interface (see ``base.Encoder``)."""

from .base import Encoder
from .image import DEFAULT_IMAGE_MODEL, EfficientNetLiteEncoder, HFImageEncoder, create_image_encoder
from .text import DEFAULT_TEXT_MODEL, POOLINGS, TextEncoder, resolve_text_model

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_TEXT_MODEL",
    "POOLINGS",
    "EfficientNetLiteEncoder",
    "Encoder",
    "HFImageEncoder",
    "TextEncoder",
    "create_image_encoder",
    "resolve_text_model",
]
