"""CMACModel (paper 000 §3.1): bidirectional cross-modal attention, two classifiers, summed logits."""

from __future__ import annotations

import torch
from torch import nn

from ..tensor_ops import masked_mean
from .base import FusionHead, Inputs, classifier, register_head
from .tokens import DEFAULT_PATCH_GRID, TokenProjector


@register_head("cmac")
class CMAC(FusionHead):
    """``A_{I->T} = Attention(H_I, H_T, H_T)``, ``A_{T->I} = Attention(H_T, H_I, H_I)`` (query, key, value), each
    mean-pooled over its queries to ``a``; ``p_T = TextClassifier([F_T; a_{I->T}])``,
    ``p_I = ImageClassifier([F_I; a_{T->I}])``, ``p = softmax(p_T + p_I)``.

    H are projected to ``d_model`` first (text and image widths differ); p_T/p_I are read as logits.

    With three modalities (the paper's model is bimodal), read as pairwise cross-attention: one attention per ordered
    pair, ``A_{Q->M} = Attention(H_Q, H_M, H_M)``; ``p_M = Classifier_M([F_M; mean_{Q != M} a_{Q->M}])`` and
    ``p = softmax(sum_M p_M)``. With two modalities this is exactly the equations above.
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
        super().__init__(dims, num_classes, **kwargs)
        if len(self.uses) < 2:
            raise ValueError(f"cmac attends across modalities: it needs two or three, features have {self.uses}")
        self.tokens = TokenProjector(self.dims, d_model, self.uses, patch_grid)
        self.attend = nn.ModuleDict(
            {
                f"{q}_to_{m}": nn.MultiheadAttention(d_model, heads, dropout=self.dropout, batch_first=True)
                for m in self.uses
                for q in self.uses
                if q != m
            }
        )
        self.classifiers = nn.ModuleDict(
            {m: classifier(self.dims[m] + d_model, self.hidden, num_classes, self.dropout) for m in self.uses}
        )

    def forward(self, inputs: Inputs) -> torch.Tensor:
        tokens = {m: self.tokens(inputs, m) for m in self.uses}
        logits = []
        for m in self.uses:
            h_m, keep_m = tokens[m]
            attended = []
            for q in self.uses:
                if q != m:
                    h_q, keep_q = tokens[q]
                    a, _ = self.attend[f"{q}_to_{m}"](h_q, h_m, h_m, key_padding_mask=~keep_m, need_weights=False)
                    attended.append(masked_mean(a, keep_q))  # averaged over the querying modality's positions
            a_m = torch.stack(attended).mean(0)
            logits.append(self.classifiers[m](torch.cat([self.pooled(inputs, m), a_m], -1)))
        return sum(logits)
