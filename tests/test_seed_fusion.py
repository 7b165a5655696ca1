"""The seeds' fusion pieces beyond shapes: paper 003's per-sample (dynamic) modality weights, and paper 001's text
self-attention, aspect-based text contrast and two-view concatenation (eq. 9). Each test checks that the piece
changes what the head computes, so a no-op version of it fails."""

from __future__ import annotations

import math

import pytest
import torch
from test_fusion import ALL_DIMS, DIMS, C, build, inputs, replace
from torch import nn

from fusent.features import ModalityBatch
from fusent.fusion import create_head
from fusent.losses import info_nce

ALL = [True] * 6
TARGET = torch.tensor([0, 1, 2, 0, 1, 2])


# ------------------------------------------------------------------------------- paper 003: dynamic weighting


def test_dynamic_weights_are_per_sample_and_sum_to_one():
    head = build("weighted_dynamic")
    w = head.sample_weights(inputs(0, ALL, ALL))
    assert w.shape == (6, 2)
    torch.testing.assert_close(w.sum(1), torch.ones(6))
    assert float(w[:, 0].detach().std()) > 1e-3  # one global vector would give every sample the same weights
    global_head = build("weighted")
    assert float(global_head.sample_weights(inputs(0, ALL, ALL))[:, 0].detach().std()) == 0.0


def test_a_samples_weights_follow_its_own_features_only():
    head = build("weighted_dynamic")
    base = inputs(1, ALL, ALL)
    before = head.sample_weights(base)
    image = base["image"].pooled.clone()
    image[2] = torch.randn(ALL_DIMS["image"]) * 3
    after = head.sample_weights({**base, "image": replace(base["image"], pooled=image)})
    assert not torch.allclose(after[2], before[2])
    others = [i for i in range(6) if i != 2]
    torch.testing.assert_close(after[others], before[others])


def test_dynamic_output_is_the_per_sample_mixture_and_differs_from_global():
    torch.manual_seed(0)
    dynamic = create_head("weighted_dynamic", DIMS, C).eval()
    plain = create_head("weighted", DIMS, C).eval()
    plain.load_state_dict({k: v for k, v in dynamic.state_dict().items() if k in plain.state_dict()})
    base = inputs(2, ALL, ALL)
    with torch.no_grad():
        x = torch.stack(list(dynamic.embed(base).values()), 1)
        scores = dynamic.weight_logits + torch.cat([dynamic.scorer[m](x[:, j]) for j, m in enumerate(DIMS)], 1)
        expected = dynamic.classifier((scores.softmax(1)[..., None] * x).sum(1))
        torch.testing.assert_close(dynamic(base), expected)
        assert not torch.allclose(dynamic(base), plain(base), atol=1e-4)  # the scorer matters...
        for scorer in dynamic.scorer.values():
            scorer.weight.zero_()
        torch.testing.assert_close(dynamic(base), plain(base))  # ...and it is the only difference


def test_dynamic_weights_renormalise_over_present_modalities_and_report_the_batch_mean():
    head = build("weighted_dynamic", ("text", "image", "audio"))
    batch = inputs(3, ALL, [True, False, True, True, True, True], ("text", "image", "audio"), ALL)
    with torch.no_grad():
        w = head.sample_weights(batch)
    assert float(w[1, 1]) == 0.0 and float(w[1].sum()) == pytest.approx(1.0)
    head(batch)
    report = head.report()
    assert report["weighting"] == "dynamic" and list(report["mean_modality_weights"]) == ["text", "image", "audio"]
    assert list(report["mean_modality_weights"].values()) == pytest.approx(w.mean(0).tolist(), abs=1e-6)
    assert "modality_weights" not in report  # not one weight the model applies: the Predictor must not treat it so


def test_weighting_is_validated():
    with pytest.raises(ValueError, match="weighting"):
        create_head("weighted", DIMS, C, weighting="per-sample")
    assert create_head("weighted", DIMS, C, weighting="dynamic").weighting == "dynamic"


# ------------------------------------------------------------------------------ paper 001: text self-attention


def test_text_self_attention_mixes_tokens_and_changes_the_output():
    head = build("two_view", dropout=0.0)
    base = inputs(4, ALL, ALL)
    x, keep = head.tokens(base, "text")
    assert bool(keep[0].all())
    attended = head.attend(x, keep)
    moved = x.clone()
    moved[0, 3] += torch.randn(x.shape[-1])
    # token 1 of row 0 now reads token 3's new value: a per-token map (no attention) would leave it unchanged
    assert not torch.allclose(head.attend(moved, keep)[0, 1], attended[0, 1], atol=1e-5)
    torch.manual_seed(0)
    plain = create_head("two_view", DIMS, C, dropout=0.0, text_attention=False).eval()
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if k in plain.state_dict()})
    assert not torch.allclose(plain(base), head(base), atol=1e-4)
    h_c = plain.text(base)[0]
    expected = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    torch.testing.assert_close(h_c, expected)  # without attention h^c is the plain token mean (eq. 2)


# ------------------------------------------------------------------------- paper 001: aspect-based text contrast


def test_aspect_spans_are_short_runs_of_real_inner_tokens():
    head = build("two_view")
    keep = torch.arange(8)[None, :] < torch.tensor([8, 5, 2, 1, 3])[:, None]
    for _ in range(20):
        span = head.aspect_spans(keep)
        lengths = span.sum(1)
        assert ((lengths >= 1) & (lengths <= 3)).all()
        assert not (span & ~keep).any()
        assert not span[0, 0] and not span[0, 7] and not span[1, 4]  # [CLS] and [SEP] are not aspects
        for row in span:  # one contiguous run
            where = row.nonzero().flatten()
            assert int(where[-1] - where[0]) + 1 == len(where)


def _loss_parts(**kwargs) -> tuple[torch.Tensor, nn.Module]:
    torch.manual_seed(0)
    head = create_head("two_view", DIMS, C, dropout=0.0, attention_dropout=0.0, **kwargs).train()
    torch.manual_seed(5)  # the same crops and aspects for every variant
    return head.training_loss(inputs(6, ALL, ALL), TARGET, nn.CrossEntropyLoss()), head


def test_aspect_contrast_adds_infonce_and_trains_the_attention():
    full, head = _loss_parts(view_weight=0.0)
    task, plain = _loss_parts(view_weight=0.0, aspect_weight=0.0)
    assert float((full - task).detach()) > 0.1  # InfoNCE over 6 samples is about log(11) at random
    full.backward()
    assert float(head.segment.grad.abs().sum()) > 0  # the appended aspect segment learns only from eq. 6
    assert not hasattr(plain, "segment")
    torch.manual_seed(5)
    base = inputs(6, ALL, ALL)
    h_c, term = head.text(base)
    assert term is not None and 0 < float(term.detach()) < 2 * math.log(11)
    head.aspect_weight = 0.0
    torch.manual_seed(5)
    alone, none = head.text(base)
    assert none is None
    torch.testing.assert_close(h_c, alone)  # the text never attends to the appended aspect: h^c is unchanged


def test_aspect_contrast_pairs_each_aspect_with_its_copy():
    """Eq. 6 by hand: InfoNCE between the pooled in-text span and the pooled appended copy of each sample."""
    _, head = _loss_parts(view_weight=0.0)
    base = inputs(6, ALL, ALL)
    x, keep = head.tokens(base, "text")
    torch.manual_seed(9)
    span = head.aspect_spans(keep)
    torch.manual_seed(9)
    term = head.text(base)[1]
    width = int(span.sum(1).max())
    copies = torch.zeros(6, width, x.shape[-1])
    copy_keep = torch.zeros(6, width, dtype=torch.bool)
    for i in range(6):
        where = span[i].nonzero().flatten()
        copies[i, : len(where)] = x[i, where] + head.segment
        copy_keep[i, : len(where)] = True
    length = x.shape[1]
    block = torch.zeros(length + width, length + width, dtype=torch.bool)
    block[:length, length:] = True
    out = head.attend(torch.cat([x, copies], 1), torch.cat([keep, copy_keep], 1), block)
    seg1 = (out[:, :length] * span[..., None]).sum(1) / span.sum(1, keepdim=True)
    seg2 = (out[:, length:] * copy_keep[..., None]).sum(1) / copy_keep.sum(1, keepdim=True)
    torch.testing.assert_close(term, info_nce(seg1, seg2, head.temperature))


# --------------------------------------------------------------------------- paper 001: eq. 9, two-view concat


def _square_image(present: list[bool], side: int = 4) -> ModalityBatch:
    """Image features as a ``side x side`` patch map (the shared fixture's 7 patches are no square)."""
    gen = torch.Generator().manual_seed(3)
    on = torch.tensor(present)
    states = torch.randn(len(present), side * side, ALL_DIMS["image"], generator=gen) * on[:, None, None]
    mask = on[:, None].expand(-1, side * side).clone()
    return ModalityBatch(states=states, mask=mask, pooled=states.mean(1), present=on)


def test_training_views_are_random_square_crops_and_evaluation_sees_the_whole_map():
    head = build("two_view", crop=0.5)
    keep = torch.ones(5, 16, dtype=torch.bool)
    head.train()
    sizes = set()
    for _ in range(30):
        view = head.crop_mask(keep, image=True)
        for row in view:
            cells = row.reshape(4, 4).nonzero()
            k = int(cells[:, 0].max() - cells[:, 0].min()) + 1
            assert len(cells) == k * k and int(cells[:, 1].max() - cells[:, 1].min()) + 1 == k  # a k x k square
            assert 2 <= k <= 4
            sizes.add(k)
    assert sizes == {2, 3, 4}
    with_cls = torch.ones(2, 17, dtype=torch.bool)
    assert not head.crop_mask(with_cls, image=True)[:, 0].any()  # a [CLS] token is no part of a crop
    audio = head.crop_mask(torch.arange(10)[None, :] < torch.tensor([[10], [6]]), image=False)
    for row, n in zip(audio, (10, 6), strict=True):
        where = row.nonzero().flatten()
        assert int(where[-1] - where[0]) + 1 == len(where) and int(where[-1]) < n and len(where) >= n // 2
    head.eval()
    torch.testing.assert_close(head.crop_mask(keep, image=True), keep)
    torch.testing.assert_close(head.crop_mask(with_cls, image=True)[:, 1:], with_cls[:, 1:])


def test_two_views_are_concatenated_around_the_text_and_differ_in_training():
    head = build("two_view", dropout=0.0, attention_dropout=0.0)
    base = {**inputs(7, ALL, ALL), "image": _square_image(ALL)}
    assert head.classifier[1].in_features == 3 * head.d_model  # concat(h_img1; h_c; h_img2)
    first, second = head.views(base, "image")
    torch.testing.assert_close(first, second)  # evaluation: both views are the whole map
    x, keep = head.tokens(base, "image")
    torch.testing.assert_close(first, x.mean(1))
    with torch.no_grad():
        h_c = head.text(base)[0]
        torch.testing.assert_close(head(base), head.classifier(torch.cat([first, h_c, second], -1)))
    head.train()
    torch.manual_seed(1)
    first, second = head.views(base, "image")
    assert not torch.allclose(first, second, atol=1e-5)  # two different random crops of each image
    torch.manual_seed(2)
    assert not torch.allclose(head(base), head(base), atol=1e-5)  # the crops are drawn anew each time


def test_view_contrast_is_infonce_between_the_two_crops():
    full, _ = _loss_parts(aspect_weight=0.0)
    task, _ = _loss_parts(aspect_weight=0.0, view_weight=0.0)
    assert float((full - task).detach()) > 0.1


def test_two_view_with_audio_has_two_views_per_non_text_modality():
    head = build("two_view", ("text", "image", "audio"))
    assert head.others == ["image", "audio"]
    assert head.classifier[1].in_features == 5 * head.d_model
    with pytest.raises(ValueError, match="two_view"):
        create_head("two_view", {"text": 8}, C)
    with pytest.raises(ValueError, match="two_view"):
        create_head("two_view", {"image": 8, "audio": 4}, C)
