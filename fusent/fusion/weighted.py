"""Learned weighted fusion (paper 003 eq. 3 and 9-10): one trainable weight per modality, summing to 1."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import FusionHead, Inputs, classifier, register_head


@register_head("weighted")
class WeightedFusion(FusionHead):
    """``X_m = W_m F_m`` (one width d), ``w = softmax(a)`` for a trainable vector a, ``X_fuse = sum_m w_m X_m``,
    ``p = Classifier(X_fuse)``.

    Eq. 9's "softmax" read as the normalisation of the trainable weights (eq. 3 requires they sum to 1), not a
    per-sample softmax of features. For a sample missing a modality, the weights are renormalised over the rest.
    """

    # Adam moves a parameter by ~lr per step and decay pulls logits to "equal weights": at the head's lr the
    # weights barely left 0.5/0.5 on MVSA (0.499/0.501), so they learn 50x faster and undecayed.
    lr_scale = {"weight_logits": 50.0}

    def __init__(self, dims: dict[str, int], num_classes: int, d_model: int = 256, **kwargs):
        super().__init__(dims, num_classes, **kwargs)
        self.project = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in self.dims.items()})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.uses)))
        self.classifier = classifier(d_model, self.hidden, num_classes, self.dropout)
        del self.missing  # an absent modality gets weight 0, so no learned stand-in is ever read

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.weight_logits, dim=0)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        present = torch.stack([inputs[m].present for m in self.uses], dim=1).to(self.weight_logits.dtype)
        none = present.sum(1, keepdim=True) == 0
        present = torch.where(none, torch.ones_like(present), present)  # nothing there: fall back to all
        w = self.weights()[None, :] * present
        w = w / w.sum(1, keepdim=True)
        x = torch.stack(list(self.embed(inputs).values()), dim=1)
        return self.classifier((w[..., None] * x).sum(1))

    def embed(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        return {m: self.project[m](self.norm[m](inputs[m].pooled)) for m in self.uses}

    def report(self) -> dict[str, Any]:
        weights = self.weights().detach().cpu().tolist()
        return {"modality_weights": dict(zip(self.uses, weights, strict=True))}
