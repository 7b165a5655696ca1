"""Token-level inputs for the attention heads: states projected to one width, with a learned missing token."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..tensor_ops import masked_mean as masked_mean  # re-exported: it lived here before
from .base import Inputs

DEFAULT_PATCH_GRID = 3  # image patches per side the attention heads see (Lite2 gives 9 x 9)


def _square_lead(n: int) -> int | None:
    """Leading non-patch tokens (0, or 1 for a CLS) of a square patch map of length ``n``; None if it is not one."""
    return next((k for k in (0, 1) if n > k and math.isqrt(n - k) ** 2 == n - k), None)


def patch_grid_applies(n: int, grid: int) -> bool:
    """Whether ``pool_patch_grid`` changes a sequence of length ``n`` (a square map wider than ``grid``)."""
    lead = _square_lead(n)
    return grid > 0 and lead is not None and math.isqrt(n - lead) > grid


def pool_patch_grid(states: torch.Tensor, mask: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average a square patch map (``L = s*s`` patches, or ``1 + s*s`` with a leading CLS token, which is kept)
    down to ``grid x grid`` patches. Anything else (or ``grid <= 0``, or ``s <= grid``) passes unchanged."""
    n = states.shape[1]
    if not patch_grid_applies(n, grid):
        return states, mask
    lead = _square_lead(n) or 0  # 0 or 1: a map the grid applies to is square
    b, d, side = states.shape[0], states.shape[2], math.isqrt(n - lead)
    patches = states[:, lead:].transpose(1, 2).reshape(b, d, side, side)
    pooled = F.adaptive_avg_pool2d(patches, grid).flatten(2).transpose(1, 2)
    real = F.adaptive_max_pool2d(mask[:, lead:].reshape(b, 1, side, side).to(states.dtype), grid).flatten(1) > 0
    return torch.cat([states[:, :lead], pooled], 1), torch.cat([mask[:, :lead], real], 1)


class TokenProjector(nn.Module):
    """``W_m H_m + e_m`` for each modality m; a row whose modality is absent becomes one learned missing token,
    so attention never sees an empty (all-masked) key set.

    ``patch_grid`` > 0 first averages the image patch map to that many patches a side: attention cost grows with
    the square of the sequence, and 81 Lite2 patches made the attention heads minutes per run on a CPU.
    """

    def __init__(self, dims: dict[str, int], d_model: int, modalities: Sequence[str], patch_grid: int = 0):
        super().__init__()
        self.patch_grid = patch_grid
        self.project = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], d_model)) for m in modalities}
        )
        self.modality_embedding = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * 0.02) for m in modalities})
        self.missing_token = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * 0.02) for m in modalities})

    def forward(self, inputs: Inputs, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [B, L, d_model], keep [B, L])``: projected states and which positions are real."""
        batch = inputs[modality]
        states, mask = batch.states, batch.mask
        if modality == "image":
            states, mask = pool_patch_grid(states, mask, self.patch_grid)
        x = self.project[modality](states) + self.modality_embedding[modality]
        absent = ~batch.present
        keep = mask & batch.present[:, None]
        x[:, 0] = torch.where(absent[:, None], self.missing_token[modality].expand_as(x[:, 0]), x[:, 0])
        keep[:, 0] = keep[:, 0] | absent
        return x, keep
