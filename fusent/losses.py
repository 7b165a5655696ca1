"""Losses on logits (never on softmax outputs): cross-entropy with optional class weights and focal loss; L1 / MSE
on the single output of a regression head; and the InfoNCE contrastive term of paper 001."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from .options import LossName

#: Losses by task; ``auto`` picks the first: cross-entropy, or L1 as MMSA and paper 001 train sentiment scores.
TASK_LOSSES: dict[str, tuple[str, ...]] = {"classification": ("ce", "focal"), "regression": ("l1", "mse")}


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


class RegressionLoss(nn.Module):
    """L1 or MSE between a head's ``[B, 1]`` output and ``[B]`` float targets (flattened first: left as they are,
    the two shapes would broadcast to ``[B, B]`` and train on every pair)."""

    def __init__(self, kind: Literal["l1", "mse"] = "l1"):
        super().__init__()
        self.kind = kind

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = output.reshape(target.shape)
        return F.l1_loss(output, target) if self.kind == "l1" else F.mse_loss(output, target)


def resolve_loss(name: LossName, task: str = "classification") -> str:
    """``name`` checked against ``task`` (``auto`` = the task's default), with a message that says what fits."""
    allowed = TASK_LOSSES[task]
    if name != "auto" and not any(name in names for names in TASK_LOSSES.values()):
        raise ValueError(f"unknown loss {name!r}; use auto, ce, focal (classification), l1 or mse (regression)")
    if name == "auto":
        return allowed[0]
    if name not in allowed:
        raise ValueError(f"loss {name!r} does not fit a {task} task; use auto or one of {', '.join(allowed)}")
    return name


def make_loss(
    name: LossName = "ce", weight: torch.Tensor | None = None, gamma: float = 2.0, task: str = "classification"
) -> nn.Module:
    name = resolve_loss(name, task)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weight)
    if name == "focal":
        return FocalLoss(gamma, weight)
    if weight is not None:
        raise ValueError("class weights apply to classification losses only; use --class-weights none")
    return RegressionLoss(name)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Paper 001 eqs. 6-8 (InfoNCE, as SimCLR's NT-Xent): row i of ``z1`` and of ``z2`` are two views of sample i.

    Each of the 2N views must pick its partner among the other 2N-1 by cosine similarity / temperature, i.e.
    ``-log exp(sim(h_i^1, h_i^2)/tau) / sum_{k != i} exp(sim(h_i, h_k)/tau)``, averaged over all 2N views. The
    paper's denominator runs over the other 2(N-1) views of the batch plus the positive, which is this sum.
    """
    n = z1.shape[0]
    if n < 2:
        raise ValueError("InfoNCE needs at least two samples in the batch (the others are the negatives)")
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)
