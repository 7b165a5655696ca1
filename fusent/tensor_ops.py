"""Small tensor helpers that both the encoders and the fusion heads use; this module imports nothing of fusent's, so
it sits below both."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (``[B, L, ...]``) over the positions ``L`` where ``keep`` (``[B, L]``, bool or 0/1) is set.

    A row with no position kept gives zeros rather than NaN (its count is clamped to 1): padding-only rows (a post
    without that modality) must not poison a batch. One formula for text pooling, the trained audio networks and the
    attention heads, so their poolings agree to the bit."""
    weights = keep[..., None].to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
