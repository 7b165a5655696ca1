"""Fusion heads: shapes, missing modalities, gradient flow, and the properties each method claims."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fusent.features import ModalityBatch
from fusent.fusion import available_heads, create_head

DIMS = {"text": 12, "image": 20}  # the default (bimodal) heads of the tests below
ALL_DIMS = {**DIMS, "audio": 16}
LENGTHS = {"text": 5, "image": 7, "audio": 9}
C = 3
B = 6
# rows 1 and 4 miss text, rows 2 and 4 miss image, rows 3 and 4 miss audio (row 4 misses everything)
TEXT_PRESENT = [True, False, True, True, False, True]
IMAGE_PRESENT = [True, True, False, True, False, True]
AUDIO_PRESENT = [True, True, True, False, False, True]
PRESENT = {"text": TEXT_PRESENT, "image": IMAGE_PRESENT, "audio": AUDIO_PRESENT}
#: Modality sets every head must accept: text+image, text+audio, text+image+audio.
MODALITY_SETS = [("text", "image"), ("text", "audio"), ("text", "image", "audio")]


def modality_batch(
    modality: str, present: list[bool], seed: int, lengths: list[int] | None = None, scale: float = 1.0
) -> ModalityBatch:
    """Like ``ModalityFeatures.batch``: absent rows have zero states/pooled and an all-False mask."""
    gen = torch.Generator().manual_seed(seed)
    width, dim = LENGTHS[modality], ALL_DIMS[modality]
    present_t = torch.tensor(present)
    if lengths is None:
        lengths = torch.randint(1, width + 1, (len(present),), generator=gen).tolist()
        lengths[0] = width  # at least one row fills the width
    n = torch.tensor(lengths) * present_t
    mask = torch.arange(width)[None, :] < n[:, None]
    states = scale * torch.randn(len(present), width, dim, generator=gen) * mask[..., None]
    pooled = scale * torch.randn(len(present), dim, generator=gen) * present_t[:, None]
    return ModalityBatch(states=states, mask=mask, pooled=pooled, present=present_t)


def inputs(
    seed: int = 0,
    text_present=TEXT_PRESENT,
    image_present=IMAGE_PRESENT,
    modalities: tuple[str, ...] = ("text", "image"),
    audio_present=AUDIO_PRESENT,
) -> dict[str, ModalityBatch]:
    present = {"text": text_present, "image": image_present, "audio": audio_present}
    return {m: modality_batch(m, present[m], seed + 1000 * k) for k, m in enumerate(modalities)}


def replace(batch: ModalityBatch, **changes) -> ModalityBatch:
    return ModalityBatch(**{**batch.__dict__, **changes})


def build(name: str, modalities: tuple[str, ...] = ("text", "image"), **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return create_head(name, {m: ALL_DIMS[m] for m in modalities}, C, **kwargs).eval()


HEADS = available_heads()
#: heads where an absent modality is left out, not replaced by a learned embedding
MASKING_HEADS = {"native_combine", "weighted", "weighted_dynamic", "late"}
#: (head, modality set) for every head and every set it can serve (a unimodal ablation needs its modality).
HEAD_SETS = [
    pytest.param(name, mods, id=f"{name}-{'+'.join(mods)}")
    for name in HEADS
    for mods in MODALITY_SETS
    if not name.endswith("_only") or name.removesuffix("_only") in mods
]


def test_registry_has_the_papers_heads():
    assert {"native_cat", "native_combine", "ote", "text_only", "image_only"} <= set(HEADS)
    assert HEADS == sorted(HEADS)


@pytest.mark.parametrize(("name", "mods"), HEAD_SETS)
def test_output_shape_and_registry_name(name: str, mods: tuple[str, ...]):
    head = build(name, mods)
    out = head(inputs(1, [True] * B, [True] * B, mods, [True] * B))
    assert out.shape == (B, C)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert head.registry_name == name
    # rows are independent: a single-row batch gives the same logits as that row in the full batch
    full = head(inputs(2, modalities=mods))
    one = head(
        {m: ModalityBatch(*(t[3:4] for t in b.__dict__.values())) for m, b in inputs(2, modalities=mods).items()}
    )
    torch.testing.assert_close(one[0], full[3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "mods"), HEAD_SETS)
def test_missing_modalities_give_finite_distinct_outputs(name: str, mods: tuple[str, ...]):
    head = build(name, mods)
    out = head(inputs(3, modalities=mods))
    assert out.shape == (B, C)
    assert torch.isfinite(out).all()
    # every row missing everything (row 4) is still a valid prediction
    all_missing = head(inputs(3, [False] * B, [False] * B, mods, [False] * B))
    assert torch.isfinite(all_missing).all()


@pytest.mark.parametrize("name", HEADS)
def test_trimodal_head_with_one_modality_missing_trains(name: str):
    """Text + image + audio where no sample has an image (e.g. speech data): forward is finite, the loss
    back-propagates to the modalities that are there, and the absent one's inputs change nothing."""
    head = build(name, ("text", "image", "audio"), dropout=0.0).train()
    batch = inputs(11, TEXT_PRESENT, [False] * B, ("text", "image", "audio"), AUDIO_PRESENT)
    out = head(batch)
    assert out.shape == (B, C) and torch.isfinite(out).all()
    loss = head.training_loss(batch, torch.tensor([0, 1, 2, 0, 1, 2]), nn.CrossEntropyLoss())
    loss.backward()
    grads = {n: p.grad for n, p in head.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    for m in head.uses:
        if m != "image":
            assert any(m in n and float(g.abs().sum()) > 0 for n, g in grads.items()), f"no gradient reaches {m}"
    head.eval()
    noisy = replace(
        batch["image"], pooled=torch.randn_like(batch["image"].pooled) * 9, states=batch["image"].states + 3
    )
    some = [i for i in range(B) if TEXT_PRESENT[i] or AUDIO_PRESENT[i]]  # (late fusion polls all when none is)
    torch.testing.assert_close(head({**batch, "image": noisy})[some], head(batch)[some], rtol=0, atol=0)


@pytest.mark.parametrize(("name", "mods"), HEAD_SETS)
def test_gradients_reach_every_parameter(name: str, mods: tuple[str, ...]):
    head = build(name, mods, dropout=0.0).train()
    batch = inputs(4, modalities=mods)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    head.training_loss(batch, target, nn.CrossEntropyLoss()).backward()  # the loss the trainer minimises
    grads = {n: p.grad for n, p in head.named_parameters()}
    assert grads, "head has no parameters"
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(g).all() for g in grads.values())
    nonzero = [n for n, g in grads.items() if g.abs().sum() > 0]
    assert len(nonzero) == len(grads)
    # heads that mask an absent modality out have no "missing" parameters; the others train theirs on such rows
    assert any("missing" in n for n in nonzero) == (name not in MASKING_HEADS)


@pytest.mark.parametrize(("name", "mods"), HEAD_SETS)
def test_every_parameter_gets_a_nonzero_gradient(name: str, mods: tuple[str, ...]):
    head = build(name, mods, dropout=0.0).train()
    head.training_loss(inputs(5, modalities=mods), torch.tensor([0, 1, 2, 0, 1, 2]), nn.CrossEntropyLoss()).backward()
    dead = [n for n, p in head.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert dead == []


# ----------------------------------------------------------------------------------------------- ablations


@pytest.mark.parametrize(
    ("name", "used", "ignored"),
    [("text_only", "text", "image"), ("image_only", "image", "text"), ("audio_only", "audio", "text")],
)
def test_unimodal_ablation_never_reads_the_other_modality(name: str, used: str, ignored: str):
    mods = tuple(m for m in ALL_DIMS if m in (used, ignored))
    head = build(name, mods)
    assert head.uses == [used]
    names = [n for n, _ in head.named_parameters()]
    assert names and not any(ignored in n for n in names)
    assert any(used in n for n in names)
    base = inputs(6, modalities=mods)
    out = head(base)
    other = modality_batch(ignored, [not p for p in base[ignored].present.tolist()], seed=77, scale=5.0)
    assert not torch.equal(other.pooled, base[ignored].pooled)
    torch.testing.assert_close(head({**base, ignored: other}), out, rtol=0, atol=0)
    torch.testing.assert_close(head({used: base[used]}), out, rtol=0, atol=0)  # the other may be absent entirely
    # ...while the modality it uses does matter
    # (a random change: the heads layer-normalise, so adding a constant to every feature would change nothing)
    changed = replace(base[used], pooled=base[used].pooled + torch.randn(base[used].pooled.shape))
    assert not torch.allclose(head({**base, used: changed}), out)


def test_unimodal_needs_its_modality():
    with pytest.raises(ValueError, match="image"):
        create_head("image_only", {"text": 8}, C)


def test_native_combine_row_without_image_is_text_classifier_plus_bias():
    head = build("native_combine")
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))  # a non-zero bias so the check is not vacuous
    base = inputs(7)
    out = head(base)
    no_image = [i for i, p in enumerate(IMAGE_PRESENT) if not p]
    both = [i for i in range(B) if TEXT_PRESENT[i] and IMAGE_PRESENT[i]]
    with torch.no_grad():
        text_logits = head.classifiers["text"](head.norm["text"](base["text"].pooled))
        image_logits = head.classifiers["image"](head.norm["image"](base["image"].pooled))
    for i in no_image:
        expected = head.bias + text_logits[i] if TEXT_PRESENT[i] else head.bias
        torch.testing.assert_close(out[i], expected)
    for i in both:
        torch.testing.assert_close(out[i], head.bias + text_logits[i] + image_logits[i])
    # the image values of rows without an image do not matter
    noisy = replace(
        base["image"],
        pooled=base["image"].pooled + 100.0 * (~base["image"].present)[:, None],
        states=base["image"].states + 3.0,
    )
    torch.testing.assert_close(head({**base, "image": noisy})[no_image], out[no_image], rtol=0, atol=0)


TOKEN_HEADS = ["ote", "cmac", "hstec", "dual_attention", "two_view"]  # heads that attend over token/patch states


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_token_heads_ignore_padding_and_absent_rows(name: str):
    head = build(name)
    base = inputs(8)
    out = head(base)
    changed = {}
    for m, b in base.items():
        pad = ~(b.mask & b.present[:, None])  # padding positions and every position of an absent row
        assert pad.any()
        changed[m] = replace(b, states=torch.where(pad[..., None], torch.randn_like(b.states) * 10, b.states))
    torch.testing.assert_close(head(changed), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TOKEN_HEADS)
def test_token_heads_attend_over_the_whole_sequence(name: str):
    head = build(name)
    base = inputs(9, [True] * B, [True] * B)
    text = base["text"]
    assert bool(text.mask[0].all())  # row 0 has every text position real
    out = head(base)
    states = text.states.clone()
    states[0, 3] += torch.randn(DIMS["text"])  # a text token that is not the first (random: LayerNorm first)
    moved = head({**base, "text": replace(text, states=states)})
    assert not torch.allclose(moved[0], out[0], atol=1e-4)
    torch.testing.assert_close(moved[1:], out[1:])  # other rows untouched
    # and the image patches matter too
    img = base["image"].states.clone()
    img[0, 2] += torch.randn(DIMS["image"])
    assert not torch.allclose(head({**base, "image": replace(base["image"], states=img)})[0], out[0], atol=1e-4)


def test_ote_has_no_unused_pooled_path():
    names = [n for n, _ in build("ote").named_parameters()]
    assert not any(n.startswith(("norm.", "missing.")) for n in names)
    assert any(n.startswith("tokens.missing_token.") for n in names)


def test_unknown_head_lists_available():
    with pytest.raises(ValueError) as info:
        create_head("no_such_head", DIMS, C)
    message = str(info.value)
    assert "no_such_head" in message
    for name in HEADS:
        assert name in message


def test_head_kwargs_are_applied():
    head = create_head("native_cat", DIMS, C, hidden=7, dropout=0.0)
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert linear[0].in_features == sum(DIMS.values()) and linear[0].out_features == 7
    assert linear[-1].out_features == C
    ote = create_head("ote", DIMS, C, d_model=16, layers=1, heads=2)
    assert len(ote.encoder.layers) == 1 and ote.cls.shape == (16,)


def test_head_fits_says_which_heads_these_modalities_can_feed():
    from fusent.fusion import head_fits

    assert head_fits("audio_only", {"text": 8, "audio": 4}) and not head_fits("audio_only", DIMS)
    assert not head_fits("cmac", {"text": 8}) and head_fits("cmac", {"text": 8, "audio": 4})
    assert all(head_fits(h, ALL_DIMS) for h in HEADS)
