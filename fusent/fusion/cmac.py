"""CMACModel (paper 000 §3.1): bidirectional cross-modal attention, two classifiers, summed logits."""

from __future__ import annotations

import torch
from torch import nn

from .base import FusionHead, Inputs, classifier, register_head
from .tokens import DEFAULT_PATCH_GRID, TokenProjector, masked_mean


@register_head("cmac")
class CMAC(FusionHead):
    """``A_{I->T} = Attention(H_I, H_T, H_T)``, ``A_{T->I} = Attention(H_T, H_I, H_I)`` (query, key, value), each
    mean-pooled over its queries to ``a``; ``p_T = TextClassifier([F_T; a_{I->T}])``,
    ``p_I = ImageClassifier([F_I; a_{T->I}])``, ``p = softmax(p_T + p_I)``.

    H are projected to ``d_model`` first (text and image widths differ); p_T/p_I are read as logits.
    """

    uses_states = True

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        d_model: int = 128,
        heads: int = 4,
        patch_grid: int = DEFAULT_PATCH_GRID,
        **kwargs,
    ):
        super().__init__(dims, num_classes, uses=["text", "image"], **kwargs)
        self.tokens = TokenProjector(self.dims, d_model, self.uses, patch_grid)
        self.attend = nn.ModuleDict(
            {
                "image_to_text": nn.MultiheadAttention(d_model, heads, dropout=self.dropout, batch_first=True),
                "text_to_image": nn.MultiheadAttention(d_model, heads, dropout=self.dropout, batch_first=True),
            }
        )
        self.classifiers = nn.ModuleDict(
            {m: classifier(self.dims[m] + d_model, self.hidden, num_classes, self.dropout) for m in self.uses}
        )

    def forward(self, inputs: Inputs) -> torch.Tensor:
        h_t, keep_t = self.tokens(inputs, "text")
        h_i, keep_i = self.tokens(inputs, "image")
        a_i2t, _ = self.attend["image_to_text"](h_i, h_t, h_t, key_padding_mask=~keep_t, need_weights=False)
        a_t2i, _ = self.attend["text_to_image"](h_t, h_i, h_i, key_padding_mask=~keep_i, need_weights=False)
        p_t = self.classifiers["text"](torch.cat([self.pooled(inputs, "text"), masked_mean(a_i2t, keep_i)], -1))
        p_i = self.classifiers["image"](torch.cat([self.pooled(inputs, "image"), masked_mean(a_t2i, keep_t)], -1))
        return p_t + p_i
