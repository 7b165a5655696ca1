"""Semantics of the paper 002/003 heads beyond shapes: weights, votes, losses, aliases."""

from __future__ import annotations

import pytest
import torch
from test_fusion import DIMS, IMAGE_PRESENT, TEXT_PRESENT, C, build, inputs, replace
from torch import nn
from torch.nn import functional as F

from fusent.fusion import create_head
from fusent.fusion.native_cat import NativeCat


def test_weighted_fusion_weights_sum_to_one_and_are_reported():
    head = build("weighted")
    with torch.no_grad():
        head.weight_logits.copy_(torch.tensor([0.3, -1.2]))
    w = head.weights().detach()
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert (w > 0).all()
    reported = head.report()["modality_weights"]
    assert set(reported) == {"text", "image"}
    assert sum(reported.values()) == pytest.approx(1.0, abs=1e-6)
    # softmax([0.3, -1.2]) = [1, e^-1.5] / (1 + e^-1.5)
    assert reported["text"] == pytest.approx(1 / (1 + torch.exp(torch.tensor(-1.5)).item()), rel=1e-5)


def test_weighted_fusion_reports_three_weights_and_drops_an_absent_modality():
    head = build("weighted", ("text", "image", "audio"))
    with torch.no_grad():
        head.weight_logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    reported = head.report()["modality_weights"]
    assert list(reported) == ["text", "image", "audio"]
    expected = torch.softmax(torch.tensor([0.5, -1.0, 2.0]), 0).tolist()
    assert list(reported.values()) == pytest.approx(expected, rel=1e-6)
    # a row without audio mixes text and image by their weights renormalised to sum to 1
    base = inputs(4, [True] * 6, [True] * 6, ("text", "image", "audio"), [False] * 6)
    with torch.no_grad():
        x = {m: head.project[m](head.norm[m](base[m].pooled)) for m in head.uses}
        w_t, w_i = expected[0] / (expected[0] + expected[1]), expected[1] / (expected[0] + expected[1])
        torch.testing.assert_close(head(base), head.classifier(w_t * x["text"] + w_i * x["image"]))


def test_weighted_fusion_renormalises_over_present_modalities():
    head = build("weighted")
    base = inputs(3)
    out = head(base)
    with torch.no_grad():
        for i in range(len(TEXT_PRESENT)):
            if TEXT_PRESENT[i] and IMAGE_PRESENT[i]:
                w = head.weights()
                x = sum(w[j] * head.project[m](head.norm[m](base[m].pooled[i])) for j, m in enumerate(head.uses))
            elif TEXT_PRESENT[i]:  # image absent: all the weight on text
                x = head.project["text"](head.norm["text"](base["text"].pooled[i]))
            else:
                continue
            torch.testing.assert_close(out[i], head.classifier(x))


def test_late_fusion_votes_with_mean_probability_tie_break():
    head = build("late")
    base = inputs(5)
    out = head(base)
    probs_out = out.softmax(-1)
    torch.testing.assert_close(probs_out.sum(-1), torch.ones(len(TEXT_PRESENT)))
    with torch.no_grad():
        per = head.modality_logits(base).softmax(-1)  # [B, M, C]
    for i, (t, v) in enumerate(zip(TEXT_PRESENT, IMAGE_PRESENT, strict=True)):
        present = [j for j, ok in enumerate((t, v)) if ok] or [0, 1]
        votes = torch.zeros(C)
        for j in present:
            votes[int(per[i, j].argmax())] += 1
        mean_p = per[i, present].mean(0)
        expected = (votes + mean_p) / (len(present) + 1)
        torch.testing.assert_close(probs_out[i], expected, rtol=1e-5, atol=1e-6)
        if len(present) == 1:  # a single voter decides
            assert int(out[i].argmax()) == int(per[i, present[0]].argmax())


def test_late_fusion_trains_each_classifier_on_its_own_rows():
    head = build("late", dropout=0.0)
    base, target = inputs(6), torch.tensor([0, 1, 2, 0, 1, 2])
    loss = head.training_loss(base, target, nn.CrossEntropyLoss())
    logits = head.modality_logits(base)
    text_rows, image_rows = torch.tensor(TEXT_PRESENT), torch.tensor(IMAGE_PRESENT)
    expected = F.cross_entropy(logits[text_rows, 0], target[text_rows]) + F.cross_entropy(
        logits[image_rows, 1], target[image_rows]
    )
    torch.testing.assert_close(loss, expected)


def test_gated_fusion_reads_learned_missing_embedding_not_absent_values():
    head = build("gated")
    base = inputs(7)
    noisy = replace(base["image"], pooled=base["image"].pooled + 50.0 * (~base["image"].present)[:, None])
    torch.testing.assert_close(head({**base, "image": noisy}), head(base))
    moved = replace(base["image"], pooled=base["image"].pooled + torch.randn_like(base["image"].pooled))
    assert not torch.allclose(head({**base, "image": moved}), head(base))  # present images do count


def test_early_fusion_is_native_cat():
    assert type(create_head("early", DIMS, C)) is NativeCat


@pytest.mark.parametrize("name", ["basic", "self_attention", "dual_attention"])
def test_paper002_heads_project_to_256_by_default(name: str):
    head = create_head(name, DIMS, C)
    assert all(p.out_features == 256 for p in head.project.values())


def test_self_attention_mixes_the_modalities():
    head = build("self_attention")
    base = inputs(8, [True] * 6, [True] * 6)
    out = head(base)
    moved = replace(base["image"], pooled=base["image"].pooled + torch.randn_like(base["image"].pooled))
    changed = head({**base, "image": moved})
    # the text half of the attended sequence depends on the image too: check the attended text token
    z = head.latent(base)
    z2 = head.latent({**base, "image": moved})
    a = head.self_attention(z, z, z, need_weights=False)[0][:, 0]
    a2 = head.self_attention(z2, z2, z2, need_weights=False)[0][:, 0]
    assert not torch.allclose(a, a2, atol=1e-5)
    assert not torch.allclose(out, changed)


def test_pool_patch_grid_averages_square_maps_only():
    from fusent.fusion.tokens import pool_patch_grid

    # a 4x4 map of patch values 0..15 (row-major) pooled to 2x2: each cell is the mean of a 2x2 block
    states = torch.arange(16.0).reshape(1, 16, 1)
    mask = torch.ones(1, 16, dtype=torch.bool)
    pooled, keep = pool_patch_grid(states, mask, 2)
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5] and keep.all()
    # a leading CLS token (1 + 16 positions) is kept as it is
    with_cls = torch.cat([torch.full((1, 1, 1), -1.0), states], 1)
    pooled, keep = pool_patch_grid(with_cls, torch.ones(1, 17, dtype=torch.bool), 2)
    assert pooled.flatten().tolist() == [-1.0, 2.5, 4.5, 10.5, 12.5]
    # an absent image (all positions masked) stays masked; grid 0 or a small map passes through
    _, keep = pool_patch_grid(states, torch.zeros(1, 16, dtype=torch.bool), 2)
    assert not keep.any()
    assert pool_patch_grid(states, mask, 0)[0] is states and pool_patch_grid(states, mask, 4)[0] is states
    odd = torch.zeros(1, 15, 1)  # not a square map
    assert pool_patch_grid(odd, torch.ones(1, 15, dtype=torch.bool), 2)[0] is odd
