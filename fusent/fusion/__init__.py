"""Fusion heads, one file per method, all registered by name behind ``create_head``."""

from . import (  # noqa: F401  (importing a module registers its heads)
    basic,
    cmac,
    dual_attention,
    gated,
    hstec,
    late,
    native_cat,
    native_combine,
    ote,
    self_attention,
    two_view,
    unimodal,
    weighted,
)
from .base import (
    FusionHead,
    Inputs,
    available_heads,
    classifier,
    create_head,
    head_accepts,
    head_arguments,
    head_fits,
    head_uses_states,
    register_head,
)

__all__ = [
    "FusionHead",
    "Inputs",
    "available_heads",
    "classifier",
    "create_head",
    "head_accepts",
    "head_arguments",
    "head_fits",
    "head_uses_states",
    "register_head",
]
