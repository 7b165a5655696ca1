"""Self-Attention Fusion Model (paper 002 §2.3, eq. 7): self-attention after the concatenation."""

from __future__ import annotations

import torch
from torch import nn

from .base import Inputs, register_head
from .basic import BasicFusion


@register_head("self_attention")
class SelfAttentionFusion(BasicFusion):
    """``c = [T; V]``, ``SA(c) = softmax(Q K^T / sqrt(d_k)) V_c`` with ``Q, K, V_c = W_q c, W_k c, W_v c``.

    c read as a sequence of one d_model token per modality (attention over a single concatenated vector would be a
    length-1 sequence, where softmax is 1 and attention does nothing); the attended tokens are concatenated.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, heads: int = 1, **kwargs):
        super().__init__(dims, num_classes, **kwargs)
        self.self_attention = nn.MultiheadAttention(self.d_model, heads, dropout=self.dropout, batch_first=True)

    def attend(self, c: torch.Tensor) -> torch.Tensor:
        return self.self_attention(c, c, c, need_weights=False)[0].flatten(1)

    def fuse(self, z: torch.Tensor, inputs: Inputs) -> torch.Tensor:
        return self.attend(z)
