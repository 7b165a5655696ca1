"""Dual-Attention Fusion Model (paper 002 §2.3, eq. 8-10): cross-modal softmax attention, then self-attention."""

from __future__ import annotations

import torch
from torch import nn

from .base import Inputs, register_head
from .self_attention import SelfAttentionFusion
from .tokens import DEFAULT_PATCH_GRID, TokenProjector


@register_head("dual_attention")
class DualAttentionFusion(SelfAttentionFusion):
    """``T' = softmax(Q_T K_I^T / sqrt(d)) V_I``, ``V' = softmax(Q_I K_T^T / sqrt(d)) V_T`` (eq. 8-9), then
    ``SA([T'; V'])`` as in eq. 7 (eq. 10).

    Queries come from the projected CLS/global vectors, keys and values from the other modality's projected token /
    patch sequence (with single vectors on both sides each softmax would be over one key, i.e. no attention).
    With three modalities, each modality's query attends over the other two modalities' tokens together (one
    softmax over their joint sequence); with two this is eq. 8-9 exactly.
    """

    uses_states = True

    def __init__(
        self, dims: dict[str, int], num_classes: int, heads: int = 1, patch_grid: int = DEFAULT_PATCH_GRID, **kwargs
    ):
        super().__init__(dims, num_classes, heads=heads, **kwargs)
        if len(self.uses) < 2:
            raise ValueError(f"dual_attention attends across modalities: it needs two or three, got {self.uses}")
        self.tokens = TokenProjector(self.dims, self.d_model, self.uses, patch_grid)
        self.cross = nn.ModuleDict(
            {m: nn.MultiheadAttention(self.d_model, heads, dropout=self.dropout, batch_first=True) for m in self.uses}
        )

    def fuse(self, z: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        adjusted = []
        tokens = {m: self.tokens(inputs, m) for m in self.uses}
        for j, m in enumerate(self.uses):
            others = [tokens[n] for n in self.uses if n != m]
            keys, keep = torch.cat([x for x, _ in others], dim=1), torch.cat([k for _, k in others], dim=1)
            query = z[:, j : j + 1]
            adjusted.append(self.cross[m](query, keys, keys, key_padding_mask=~keep, need_weights=False)[0])
        return self.attend(torch.cat(adjusted, dim=1))
