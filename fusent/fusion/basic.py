"""Basic Fusion Model (paper 002 §2.1-2.3, eq. 1-6): 256-d projections of the text CLS and image global vectors,
concatenated, then fully connected layers."""

from __future__ import annotations

import torch
from torch import nn

from .base import FusionHead, Inputs, classifier, register_head


@register_head("basic")
class BasicFusion(FusionHead):
    """``T = W_t h_CLS + b_t``, ``V = W_v g + b_v`` (both ``d_model`` = 256), ``c = [T; V]``, ``p = FC(c)``.

    With audio, ``A = W_a s + b_a`` joins the concatenation (``[T; V; A]``, or ``[T; A]`` without images).
    h_CLS / g are the encoders' pooled vectors (CLS with ``--text-pooling cls``, as in the paper). Subclasses
    change only ``fuse``.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, d_model: int = 256, **kwargs):
        super().__init__(dims, num_classes, **kwargs)
        self.d_model = d_model
        self.project = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in self.dims.items()})
        self.classifier = classifier(len(self.uses) * d_model, self.hidden, num_classes, self.dropout)

    def latent(self, inputs: Inputs) -> torch.Tensor:
        """``[B, M, d_model]``: one projected vector per modality (eq. 2 and 5)."""
        return torch.stack([self.project[m](self.pooled(inputs, m)) for m in self.uses], dim=1)

    def embed(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        return dict(zip(self.uses, self.latent(inputs).unbind(1), strict=True))

    def fuse(self, z: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        return z.flatten(1)  # eq. 6: concatenation

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.classifier(self.fuse(self.latent(inputs), inputs))
