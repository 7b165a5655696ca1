"""NativeCatModel (paper 000 §3.4): one classifier on the concatenated modality vectors."""

from __future__ import annotations

import torch

from .base import FusionHead, Inputs, classifier, register_head


@register_head("native_cat", aliases=["early"])
class NativeCat(FusionHead):
    """``p = classifier([F_T; F_I])``. Each F is layer-normalised first so 384-d text and 1280-d image scales match.

    With audio, ``[F_T; F_I; F_A]`` (or ``[F_T; F_A]``).
    Also registered as ``early``: paper 003's early fusion (§2.2.4, feature-level concatenation) is this model.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, **kwargs):
        super().__init__(dims, num_classes, **kwargs)
        self.classifier = classifier(sum(self.dims.values()), self.hidden, num_classes, self.dropout)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.classifier(torch.cat([self.pooled(inputs, m) for m in self.uses], dim=-1))
