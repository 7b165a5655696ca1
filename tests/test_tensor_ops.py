"""One ``masked_mean`` for text pooling, the trained audio networks, the spectral features and the fusion heads: the
same numbers, to the bit, as each formula it replaced; zeros (not NaN) for a row with nothing kept."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import fusent
from fusent.encoders import spectral
from fusent.tensor_ops import masked_mean


def _batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, 6, generator=g, dtype=dtype) * 3
    keep = torch.rand(5, 7, generator=g) > 0.4
    keep[0] = False  # a row with nothing kept
    keep[1] = True
    keep[2, :] = False
    keep[2, 3] = True
    return x, keep


def test_masked_mean_is_the_mean_of_the_kept_positions():
    x, keep = _batch(torch.float64)
    out = masked_mean(x, keep)
    assert out.shape == (5, 6)
    for b in range(1, 5):
        torch.testing.assert_close(out[b], x[b][keep[b]].mean(0))
    torch.testing.assert_close(out[2], x[2, 3])


def test_an_all_masked_row_gives_zeros_not_nan():
    x, keep = _batch()
    out = masked_mean(x, keep)
    assert torch.equal(out[0], torch.zeros(6)) and torch.isfinite(out).all()
    assert torch.equal(masked_mean(x, torch.zeros(5, 7, dtype=torch.bool)), torch.zeros(5, 6))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_bit_identical_to_the_formulas_it_replaced(dtype: torch.dtype):
    x, keep = _batch(dtype)
    # fusion/tokens.py (and encoders/text.py with ``mask`` an int attention mask)
    old_tokens = (x * keep.unsqueeze(-1).to(x.dtype)).sum(1) / keep.unsqueeze(-1).to(x.dtype).sum(1).clamp(min=1.0)
    assert torch.equal(masked_mean(x, keep), old_tokens)
    attention = keep.long()
    weights = attention.unsqueeze(-1).to(x.dtype)
    assert torch.equal(masked_mean(x, attention), (x * weights).sum(1) / weights.sum(1).clamp(min=1.0))
    # encoders/audio.py
    weights = keep[..., None].to(x.dtype)
    assert torch.equal(masked_mean(x, keep), (x * weights).sum(1) / weights.sum(1).clamp(min=1.0))


def test_late_fusion_mean_over_voters_is_unchanged():
    """fusion/late.py divided by the voter count without a clamp: its voters always count at least one."""
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(6, 3, 4, generator=g).softmax(-1)
    voters = (torch.rand(6, 3, generator=g) > 0.5).float()
    voters = torch.where(voters.sum(1, keepdim=True) == 0, torch.ones_like(voters), voters)
    old = (probs * voters[..., None]).sum(1) / voters.sum(1, keepdim=True)
    assert torch.equal(masked_mean(probs, voters), old)


def test_spectral_statistics_are_unchanged():
    x, keep = _batch()
    weights = keep[..., None].to(x.dtype)
    count = weights.sum(1, keepdim=True).clamp(min=1.0)
    mean = (x * weights).sum(1, keepdim=True) / count
    var = ((x - mean).pow(2) * weights).sum(1, keepdim=True) / count
    assert torch.equal(spectral.normalise(x, keep), (x - mean) / (var + 1e-5).sqrt() * weights)
    count = weights.sum(1).clamp(min=1.0)
    mean = (x * weights).sum(1) / count
    var = ((x - mean[:, None]).pow(2) * weights).sum(1) / count
    assert torch.equal(spectral.mean_std(x, keep), torch.cat([mean, var.sqrt()], dim=-1))


def test_one_masked_mean_in_the_package():
    root = Path(fusent.__file__).parent
    defined = sorted(
        f"{path.relative_to(root)}:{node.name}"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and "masked_mean" in node.name
    )
    assert defined == ["tensor_ops.py:masked_mean"]
    tree = ast.parse((root / "tensor_ops.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level or "fusent" in n.module)]
