"""Fusion heads, one file per method, all registered by name behind ``create_head``."""

from . import cmac, hstec, native_cat, native_combine, ote, unimodal  # noqa: F401  (registers the heads)
from .base import FusionHead, Inputs, available_heads, classifier, create_head, head_uses_states, register_head

__all__ = [
    "FusionHead",
    "Inputs",
    "available_heads",
    "classifier",
    "create_head",
    "head_uses_states",
    "register_head",
]
