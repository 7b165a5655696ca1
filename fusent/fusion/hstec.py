"""HSTECModel (paper 000 §3.2): attention over the concatenated hidden states, appended to each modality."""

from __future__ import annotations

import torch
from torch import nn

from ..tensor_ops import masked_mean
from .base import FusionHead, Inputs, classifier, register_head
from .tokens import DEFAULT_PATCH_GRID, TokenProjector


@register_head("hstec")
class HSTEC(FusionHead):
    """``H_concat = [H_T; H_I]``, ``A = Attention(H_concat)``, ``a = mean(A)``;
    ``p_m = Classifier_m([F_m; a])`` for each modality, ``p = softmax(sum_m p_m)``.

    With audio, ``H_concat = [H_T; H_I; H_A]`` and a third classifier (the method is modality-agnostic).
    "Attention" read as one transformer-encoder layer (the model's name: Hidden-State Transformer Encoder) over the
    projected states; the mean runs over real positions only.
    """

    uses_states = True

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        d_model: int = 128,
        heads: int = 4,
        layers: int = 1,
        patch_grid: int = DEFAULT_PATCH_GRID,
        **kwargs,
    ):
        super().__init__(dims, num_classes, **kwargs)
        self.tokens = TokenProjector(self.dims, d_model, self.uses, patch_grid)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=self.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.classifiers = nn.ModuleDict(
            {m: classifier(d + d_model, self.hidden, num_classes, self.dropout) for m, d in self.dims.items()}
        )

    def forward(self, inputs: Inputs) -> torch.Tensor:
        parts = [self.tokens(inputs, m) for m in self.uses]
        h = torch.cat([x for x, _ in parts], dim=1)
        keep = torch.cat([k for _, k in parts], dim=1)
        a = masked_mean(self.encoder(h, src_key_padding_mask=~keep), keep)
        return sum(self.classifiers[m](torch.cat([self.pooled(inputs, m), a], -1)) for m in self.uses)
