"""Gated fusion (paper 003 eq. 2): a non-linearity over the sum of per-modality linear maps."""

from __future__ import annotations

import torch
from torch import nn

from .base import FusionHead, Inputs, classifier, register_head


@register_head("gated")
class GatedFusion(FusionHead):
    """``X_fusion = ReLU(W_T F_T + W_I F_I)``, ``p = Classifier(X_fusion)``.

    With speech, ``+ W_A F_A`` (paper 003 fuses text, speech and image the same way).
    The paper names sigma "ReLU" and calls the W "trainable weights learned via self-attention"; read as
    trainable linear maps (no attention is specified). An absent modality uses its learned missing embedding.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, d_model: int = 256, **kwargs):
        super().__init__(dims, num_classes, **kwargs)
        self.maps = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in self.dims.items()})
        self.classifier = classifier(d_model, self.hidden, num_classes, self.dropout)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.classifier(torch.relu(sum(self.embed(inputs).values())))

    def embed(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        return {m: self.maps[m](self.pooled(inputs, m)) for m in self.uses}
