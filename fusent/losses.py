"""Losses on logits (never on softmax outputs): cross-entropy with optional class weights, and focal loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

LossName = Literal["ce", "focal"]


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017; paper 002 §3 uses gamma 2-4): ``-alpha_y (1 - p_y)^gamma log p_y``, averaged.

    ``gamma = 0`` is exactly (class-weighted) cross-entropy; ``weight`` plays the role of alpha. The mean is
    normalised by the summed weights, as ``nn.CrossEntropyLoss`` does, so the two agree at gamma 0.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is None:
            return loss.mean()
        w = self.weight[target]
        return (w * loss).sum() / w.sum()


def make_loss(name: LossName = "ce", weight: torch.Tensor | None = None, gamma: float = 2.0) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight)
    if name == "focal":
        return FocalLoss(gamma, weight)
    raise ValueError(f"unknown loss {name!r}; use 'ce' or 'focal'")
