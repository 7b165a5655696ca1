"""Token-level inputs for the attention heads: states projected to one width, with a learned missing token."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Inputs


def masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the sequence of the positions where ``keep`` is True (``x`` is ``[B, L, D]``)."""
    weights = keep.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TokenProjector(nn.Module):
    """``W_m H_m + e_m`` for each modality m; a row whose modality is absent becomes one learned missing token,
    so attention never sees an empty (all-masked) key set."""

    def __init__(self, dims: dict[str, int], d_model: int, modalities: Sequence[str]):
        super().__init__()
        self.project = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(dims[m]), nn.Linear(dims[m], d_model)) for m in modalities}
        )
        self.modality_embedding = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * 0.02) for m in modalities})
        self.missing_token = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * 0.02) for m in modalities})

    def forward(self, inputs: Inputs, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x [B, L, d_model], keep [B, L])``: projected states and which positions are real."""
        batch = inputs[modality]
        x = self.project[modality](batch.states) + self.modality_embedding[modality]
        absent = ~batch.present
        keep = batch.mask & batch.present[:, None]
        x[:, 0] = torch.where(absent[:, None], self.missing_token[modality].expand_as(x[:, 0]), x[:, 0])
        keep[:, 0] = keep[:, 0] | absent
        return x, keep
