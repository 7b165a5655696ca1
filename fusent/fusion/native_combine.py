"""NativeCombineModel (paper 000 §3.4): per-modality classifiers whose logits are summed."""

from __future__ import annotations

import torch
from torch import nn

from .base import FusionHead, Inputs, classifier, register_head


@register_head("native_combine")
class NativeCombine(FusionHead):
    """``p = softmax(p_T + p_I)`` with p_T = TextClassifier(F_T), p_I = ImageClassifier(F_I).

    With audio, ``+ p_A`` from a third classifier.
    The paper's p_T/p_I are read as logits (softmax is applied once, to the sum, inside the loss); a missing
    modality contributes zero logits, so the prediction falls back to the modalities that are there.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, **kwargs):
        super().__init__(dims, num_classes, **kwargs)
        self.classifiers = nn.ModuleDict(
            {m: classifier(d, self.hidden, num_classes, self.dropout) for m, d in self.dims.items()}
        )
        self.bias = nn.Parameter(torch.zeros(num_classes))
        del self.missing  # an absent modality is masked out of the sum, so it needs no learned embedding

    def forward(self, inputs: Inputs) -> torch.Tensor:
        logits = self.bias.expand(inputs[self.uses[0]].pooled.shape[0], -1)
        for m in self.uses:
            present = inputs[m].present[:, None].to(logits.dtype)
            logits = logits + present * self.classifiers[m](self.norm[m](inputs[m].pooled))
        return logits
