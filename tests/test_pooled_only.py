"""Pooled-only features (keep_states=False): same results for pooled heads, a clear refusal for attention heads."""

from __future__ import annotations

import pytest
import torch

from fusent.fusion import available_heads, head_uses_states
from fusent.train_flow import fit, prepare
from fusent.training import TrainConfig

TWO_EPOCHS = TrainConfig(epochs=2, batch_size=8, seed=3)


@pytest.fixture(scope="module")
def pooled_only(tiny_mvsa, tiny_settings, tmp_path_factory):
    cache = tmp_path_factory.mktemp("pooled_cache")
    return prepare(tiny_mvsa.root, tiny_settings, cache_dir=cache, progress=False, keep_states=False)


def test_pooled_only_table_has_no_states(pooled_only, prepared_tiny):
    assert not pooled_only.train.has_states and prepared_tiny.train.has_states
    batch = pooled_only.train.batch(torch.arange(4))
    for m, b in batch.items():
        assert b.states.shape == (4, 0, pooled_only.dims[m])  # no fake length-1 sequence
        full = prepared_tiny.train.batch(torch.arange(4))[m]
        torch.testing.assert_close(b.pooled, full.pooled)
        assert torch.equal(b.present, full.present)


def test_pooled_head_gives_the_same_result_without_states(pooled_only, prepared_tiny):
    _, with_states = fit(prepared_tiny, "native_cat", TWO_EPOCHS, progress=False)
    _, without = fit(pooled_only, "native_cat", TWO_EPOCHS, progress=False)
    assert [h["train_loss"] for h in with_states.history] == [h["train_loss"] for h in without.history]


def test_attention_heads_refuse_pooled_only_features(pooled_only):
    attention = [h for h in available_heads() if head_uses_states(h)]
    assert set(attention) == {"ote", "cmac", "hstec", "dual_attention", "two_view"}
    assert not head_uses_states("native_combine")
    for head in attention:
        with pytest.raises(ValueError, match="keep_states=True"):
            fit(pooled_only, head, TWO_EPOCHS, progress=False)
