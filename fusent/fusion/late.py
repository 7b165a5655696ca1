"""Late fusion (paper 003 §2.2.4): per-modality classifiers trained separately, majority vote at prediction."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..tensor_ops import masked_mean
from .base import FusionHead, Inputs, classifier, register_head


@register_head("late")
class LateFusion(FusionHead):
    """``y = majority_vote(argmax p_m)`` over the modalities present; a tie (always possible with two) is broken by
    the mean of their probabilities (with three voters, a three-way split is broken the same way). Each classifier
    minimises its own loss on the samples that have its modality.

    Output "logits" are ``log((votes + mean_p) / (M + 1))``: a distribution whose argmax is the vote winner.

    With one output (regression) there is nothing to vote on: the analogue is ``y = mean_m y_m``, the mean of the
    per-modality scores over the modalities present; each regressor still trains on its own loss.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, **kwargs):
        super().__init__(dims, num_classes, **kwargs)
        self.classifiers = nn.ModuleDict(
            {m: classifier(d, self.hidden, num_classes, self.dropout) for m, d in self.dims.items()}
        )
        del self.missing  # an absent modality does not vote

    def modality_logits(self, inputs: Inputs) -> torch.Tensor:
        """``[B, M, C]`` logits of each modality's classifier."""
        return torch.stack([self.classifiers[m](self.norm[m](inputs[m].pooled)) for m in self.uses], dim=1)

    def voters(self, inputs: Inputs) -> torch.Tensor:
        present = torch.stack([inputs[m].present for m in self.uses], dim=1).float()
        return torch.where(present.sum(1, keepdim=True) == 0, torch.ones_like(present), present)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        logits, voters = self.modality_logits(inputs), self.voters(inputs)
        if self.num_classes == 1:  # regression: mean of the present modalities' scores
            return masked_mean(logits, voters)
        probs = logits.softmax(-1)
        votes = (F.one_hot(probs.argmax(-1), self.num_classes).float() * voters[..., None]).sum(1)
        mean_p = masked_mean(probs, voters)
        return torch.log((votes + mean_p) / (voters.sum(1, keepdim=True) + 1))

    def training_loss(self, inputs: Inputs, target: torch.Tensor, loss_fn: nn.Module) -> torch.Tensor:
        logits, total = self.modality_logits(inputs), None
        for j, m in enumerate(self.uses):
            rows = inputs[m].present  # only real inputs train a classifier (not the all-absent vote fallback)
            if rows.any():
                loss = loss_fn(logits[rows, j], target[rows])
                total = loss if total is None else total + loss
        return total if total is not None else logits.sum() * 0.0  # a batch with no inputs at all
