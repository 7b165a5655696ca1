"""Focal loss (paper 002) against cross-entropy and a hand-computed value; regression losses and task checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fusent.losses import FocalLoss, RegressionLoss, make_loss, resolve_loss


def test_focal_equals_cross_entropy_at_gamma_zero():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    weight = torch.tensor([0.5, 2.0, 1.0])
    torch.testing.assert_close(FocalLoss(0.0)(logits, target), nn.CrossEntropyLoss()(logits, target))
    torch.testing.assert_close(
        FocalLoss(0.0, weight)(logits, target), nn.CrossEntropyLoss(weight=weight)(logits, target)
    )


def test_focal_hand_computed():
    # logits [0, ln 3] -> p = [0.25, 0.75]; target 1: p_t = 0.75
    # loss = -(1 - 0.75)^2 * ln(0.75) = 0.0625 * 0.287682... = 0.017980...
    logits = torch.tensor([[0.0, math.log(3.0)]])
    value = FocalLoss(2.0)(logits, torch.tensor([1]))
    assert value.item() == pytest.approx(0.0625 * -math.log(0.75), rel=1e-6)


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    target = torch.tensor([0, 0])
    ce = nn.functional.cross_entropy(logits, target, reduction="none")
    fl = torch.stack([FocalLoss(2.0)(logits[i : i + 1], target[i : i + 1]) for i in range(2)])
    ratio = fl / ce
    assert ratio[0] < ratio[1] < 1.0  # the confident, correct row is down-weighted most


def test_make_loss_choices():
    assert isinstance(make_loss("ce"), nn.CrossEntropyLoss)
    assert isinstance(make_loss("focal", gamma=3.0), FocalLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(-1.0)


def test_regression_loss_pairs_each_output_with_its_own_target():
    output = torch.tensor([[1.0], [4.0]])  # a head's [B, 1] output
    target = torch.tensor([2.0, 0.0])
    # per row |1 - 2| = 1 and |4 - 0| = 4 -> L1 2.5, MSE (1 + 16) / 2 = 8.5. (Broadcasting [2, 1] against [2]
    # would compare every output with every target: L1 (1 + 1 + 2 + 4) / 4 = 2.0.)
    assert make_loss("l1", task="regression")(output, target).item() == pytest.approx(2.5)
    assert make_loss("mse", task="regression")(output, target).item() == pytest.approx(8.5)
    assert isinstance(make_loss("auto", task="regression"), RegressionLoss)
    assert make_loss("auto", task="regression").kind == "l1"  # MMSA / paper 001 practice


def test_losses_are_checked_against_the_task():
    assert resolve_loss("auto", "classification") == "ce" and resolve_loss("auto", "regression") == "l1"
    with pytest.raises(ValueError, match="does not fit a regression task"):
        make_loss("focal", task="regression")
    with pytest.raises(ValueError, match="does not fit a classification task"):
        make_loss("mse")
    with pytest.raises(ValueError, match="class weights"):
        make_loss("l1", weight=torch.ones(3), task="regression")


def test_length_buckets_see_every_sample_once_in_similar_length_batches():
    import torch

    from fusent.training import length_buckets

    lengths = torch.randint(1, 100, (1000,), generator=torch.Generator().manual_seed(0))
    order = torch.randperm(1000)
    batches = length_buckets(order, lengths, 32, torch.Generator().manual_seed(1), span=4)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    # within each run of 4 batches rows are sorted, so a batch's spread is far below the whole range's
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 40
    again = length_buckets(order, lengths, 32, torch.Generator().manual_seed(1), span=4)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
