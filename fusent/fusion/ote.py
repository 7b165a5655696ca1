"""OTEModel (paper 000 §3.3): a transformer encoder over the joint sequence of text tokens and image patches."""

from __future__ import annotations

import torch
from torch import nn

from .base import FusionHead, Inputs, register_head
from .tokens import DEFAULT_PATCH_GRID, TokenProjector


@register_head("ote")
class OTE(FusionHead):
    """``F_concat = [CLS; W_T H_T + e_T; W_I H_I + e_I]``, ``F_attn = TransformerEncoder(F_concat)``,
    ``p = Classifier(F_attn[CLS])``.

    With audio, ``W_A H_A + e_A`` (speech frames) joins the sequence.
    Paper's ``concat([F_I, F_T], dim=2)`` read as concatenation along the sequence of projected token/patch states
    (concatenating two pooled vectors would give a length-1 sequence, where attention does nothing). A missing
    modality is one learned "missing" token instead of its states.
    """

    uses_states = True

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        d_model: int = 128,
        layers: int = 1,
        heads: int = 4,
        dropout: float = 0.3,
        patch_grid: int = DEFAULT_PATCH_GRID,
        **kwargs,
    ):
        # CPU-sized defaults (the paper's 768-d, 12-head setting is for a GPU and fine-tuned encoders)
        super().__init__(dims, num_classes, dropout=dropout, **kwargs)
        self.tokens = TokenProjector(self.dims, d_model, self.uses, patch_grid)
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=self.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Dropout(self.dropout), nn.Linear(d_model, num_classes))
        # The pooled-vector path of the base class is unused here: its parameters must not exist untrained.
        del self.norm, self.missing

    def forward(self, inputs: Inputs) -> torch.Tensor:
        parts = [self.tokens(inputs, m) for m in self.uses]
        batch_size = parts[0][0].shape[0]
        cls = self.cls.expand(batch_size, 1, -1)
        x = torch.cat([cls] + [p[0] for p in parts], dim=1)
        keep = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool, device=x.device)] + [p[1] for p in parts], dim=1)
        h = self.encoder(x, src_key_padding_mask=~keep)
        return self.out(h[:, 0])
