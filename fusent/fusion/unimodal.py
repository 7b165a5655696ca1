"""Single-modality ablations: text-only and image-only (paper 000 Table 4, "Bert" and "ResNet" rows), audio-only
(paper 003's "LSTM-CNN (Speech-only)" row)."""

from __future__ import annotations

import torch

from .base import FusionHead, Inputs, classifier, register_head


@register_head("text_only", modality="text")
@register_head("image_only", modality="image")
@register_head("audio_only", modality="audio")
class Unimodal(FusionHead):
    """``p = Classifier(F_m)`` for one modality m; the others are never read and own no parameters."""

    fixed_arguments = ("uses",)

    def __init__(self, dims: dict[str, int], num_classes: int, modality: str, **kwargs):
        super().__init__(dims, num_classes, uses=[modality], **kwargs)
        self.modality = modality
        self.classifier = classifier(self.dims[modality], self.hidden, num_classes, self.dropout)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.classifier(self.pooled(inputs, self.modality))
