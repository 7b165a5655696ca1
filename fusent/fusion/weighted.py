"""Learned weighted fusion (paper 003 eq. 3 and 9-10): modality weights summing to 1, global or per sample."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from .base import FusionHead, Inputs, classifier, register_head

Weighting = Literal["global", "dynamic"]
WEIGHTINGS: tuple[str, ...] = ("global", "dynamic")


@register_head("weighted")
@register_head("weighted_dynamic", weighting="dynamic")
class WeightedFusion(FusionHead):
    """``X_m = W_m F_m`` (one width d), ``w = softmax(s)`` over the modalities, ``X_fuse = sum_m w_m X_m``,
    ``p = Classifier(X_fuse)`` (eq. 10).

    ``weighting="global"`` (``weighted``): ``s = a``, one trainable vector, so every sample mixes the modalities
    alike: §2.2.4's "trainable weight vector ... updated through back propagation" with eq. 3's constraint that the
    weights sum to 1.

    ``weighting="dynamic"`` (``weighted_dynamic``): ``s_m = a_m + v_m . X_m``, a confidence score per sample and
    modality from its own projected features, softmax across the modalities. This is the algorithm box's reading of
    §2.3 (eq. 9, "compute confidence scores for each modality: w_T = softmax(X_T), ..." then eq. 10) and of §3.1.3
    ("weights ... dynamically adjusted based on modality reliability and classification confidence"). Eq. 9's
    literal softmax over one feature vector's components would give per-component weights that sum to 1 within a
    modality, not across modalities as eq. 3 and the algorithm ("all weights sum to 1") require; so the softmax is
    read as taken across the modalities' scalar scores. The global logits ``a`` stay as the scores' bias, so dynamic
    weighting can fall back to global weights (``v = 0``). Reported weights are their mean over the most recent
    batch the head saw (after training: the last validation batch of the kept epoch).

    Either way, for a sample missing a modality the weights are renormalised over the rest.
    """

    # Adam moves a parameter by ~lr per step and decay pulls logits to "equal weights": at the head's lr the
    # weights barely left 0.5/0.5 on MVSA (0.499/0.501), so they learn 50x faster and undecayed.
    lr_scale = {"weight_logits": 50.0}

    def __init__(
        self, dims: dict[str, int], num_classes: int, d_model: int = 256, weighting: Weighting = "global", **kwargs
    ):
        super().__init__(dims, num_classes, **kwargs)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        self.project = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in self.dims.items()})
        self.weight_logits = nn.Parameter(torch.zeros(len(self.uses)))
        if weighting == "dynamic":
            self.scorer = nn.ModuleDict({m: nn.Linear(d_model, 1, bias=False) for m in self.uses})
            self.register_buffer("mean_weights", torch.full((len(self.uses),), 1.0 / len(self.uses)))
        self.classifier = classifier(d_model, self.hidden, num_classes, self.dropout)
        del self.missing  # an absent modality gets weight 0, so no learned stand-in is ever read

    def weights(self) -> torch.Tensor:
        """The global weights (``weighting="global"``); with dynamic weighting, the last batch's mean."""
        if self.weighting == "dynamic":
            return self.mean_weights
        return torch.softmax(self.weight_logits, dim=0)

    def sample_weights(self, inputs: Inputs, x: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, M]`` weights of each sample's modalities, summing to 1 over the modalities it has."""
        present = torch.stack([inputs[m].present for m in self.uses], dim=1)
        present = present | ~present.any(1, keepdim=True)  # nothing there: fall back to all
        scores = self.weight_logits[None, :].expand(present.shape[0], -1)
        if self.weighting == "dynamic":
            x = torch.stack(list(self.embed(inputs).values()), dim=1) if x is None else x
            scores = scores + torch.cat([self.scorer[m](x[:, j]) for j, m in enumerate(self.uses)], dim=1)
        return torch.softmax(scores.masked_fill(~present, float("-inf")), dim=1)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        x = torch.stack(list(self.embed(inputs).values()), dim=1)  # [B, M, d]
        w = self.sample_weights(inputs, x)
        if self.weighting == "dynamic" and len(w):
            with torch.no_grad():
                self.mean_weights.copy_(w.mean(0))
        return self.classifier((w[..., None] * x).sum(1))

    def embed(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        return {m: self.project[m](self.norm[m](inputs[m].pooled)) for m in self.uses}

    def report(self) -> dict[str, Any]:
        weights = dict(zip(self.uses, self.weights().detach().cpu().tolist(), strict=True))
        if self.weighting == "dynamic":  # per-sample weights: their batch mean, not one weight the model applies
            return {"weighting": "dynamic", "mean_modality_weights": weights}
        return {"modality_weights": weights}
