"""OTEModel (paper 000 §3.3): a transformer encoder over the joint sequence of text tokens and image patches."""

from __future__ import annotations

import torch
from torch import nn

from .base import FusionHead, Inputs, register_head


@register_head("ote")
class OTE(FusionHead):
    """``F_concat = [CLS; W_T H_T + e_T; W_I H_I + e_I]``, ``F_attn = TransformerEncoder(F_concat)``,
    ``p = Classifier(F_attn[CLS])``.

    Paper's ``concat([F_I, F_T], dim=2)`` read as concatenation along the sequence of projected token/patch states
    (concatenating two pooled vectors would give a length-1 sequence, where attention does nothing). A missing
    modality is one learned "missing" token instead of its states.
    """

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        d_model: int = 256,
        layers: int = 2,
        heads: int = 4,
        **kwargs,
    ):
        super().__init__(dims, num_classes, **kwargs)
        self.project = nn.ModuleDict(
            {m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d_model)) for m, d in self.dims.items()}
        )
        self.modality_embedding = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * 0.02) for m in self.uses})
        self.missing_token = nn.ParameterDict({m: nn.Parameter(torch.randn(d_model) * 0.02) for m in self.uses})
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=2 * d_model, dropout=self.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Dropout(self.dropout), nn.Linear(d_model, num_classes))
        # The pooled-vector path of the base class is unused here: its parameters must not exist untrained.
        del self.norm, self.missing

    def tokens(self, inputs: Inputs, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        batch = inputs[modality]
        x = self.project[modality](batch.states) + self.modality_embedding[modality]
        absent = ~batch.present
        mask = batch.mask & batch.present[:, None]
        # absent rows: position 0 becomes the learned missing token, and is the only position attended to
        x[:, 0] = torch.where(absent[:, None], self.missing_token[modality].expand_as(x[:, 0]), x[:, 0])
        mask[:, 0] = mask[:, 0] | absent
        return x, mask

    def forward(self, inputs: Inputs) -> torch.Tensor:
        parts = [self.tokens(inputs, m) for m in self.uses]
        batch_size = parts[0][0].shape[0]
        cls = self.cls.expand(batch_size, 1, -1)
        x = torch.cat([cls] + [p[0] for p in parts], dim=1)
        keep = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool)] + [p[1] for p in parts], dim=1)
        h = self.encoder(x, src_key_padding_mask=~keep)
        return self.out(h[:, 0])
