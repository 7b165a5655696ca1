"""A real-data slice of MVSA-Single with the packaged default encoders (MiniLM text, EfficientNet-Lite0 image).

Unmarked on purpose: CI must run at least one end-to-end check on real data. Skipped when the data is absent.
"""

from __future__ import annotations

import pytest
import torch
from conftest import REAL_MVSA

from fusent.train_flow import EncoderSettings, evaluate_prepared, fit, prepare
from fusent.training import TrainConfig

LIMIT = 200
FRACTIONS = {"val_fraction": 0.15, "test_fraction": 0.15}  # 140 / 30 / 30


@pytest.fixture(scope="module")
def prepared_real(tmp_path_factory: pytest.TempPathFactory):
    if not (REAL_MVSA / "train.txt").exists():
        pytest.skip(f"real MVSA slice not found at {REAL_MVSA}")
    cache_dir = tmp_path_factory.mktemp("real_cache")
    prepared = prepare(REAL_MVSA, EncoderSettings(), limit=LIMIT, cache_dir=cache_dir, progress=False, **FRACTIONS)
    prepared.extra["cache_dir"] = cache_dir
    return prepared


def test_real_slice_beats_constant_predictor(prepared_real):
    p = prepared_real
    assert len(p.train) + len(p.val) + len(p.test) == LIMIT
    assert len(p.val) == len(p.test) == 30
    assert not set(p.test.ids) & set(p.train.ids + p.val.ids)
    assert len(p.unlabelled) == LIMIT  # limit keeps the first N samples to predict too
    assert p.dims == {"text": 384, "image": 1280}
    # the report is filled in: texts decoded by fallback are noted, and any problem is a known kind
    report = p.bundle.report
    assert report.notes["text_decoded_by_fallback"] > 0
    known = {"missing_image", "missing_text", "empty_text", "corrupt_image", "truncated_image", "too_large_image"}
    assert set(report.counts) <= known
    assert "data problems:" in report.summary()
    # every labelled sample has both modalities in this corpus
    assert bool(p.train.modalities["text"].present.all()) and bool(p.train.modalities["image"].present.all())

    # 140 training posts: without class weights the rare neutral class (10%) is never predicted at this size
    model, result = fit(p, "native_cat", TrainConfig(seed=13, class_weights="sqrt"), progress=False)
    metrics = evaluate_prepared(model, p)["test"]  # held out: the epoch was chosen on validation
    # a constant "positive" predictor scores macro-F1 ~0.25 (see test_metrics.test_constant_predictor_macro_f1)
    assert metrics["f1_macro"] > 0.40, metrics
    assert metrics["accuracy"] > 0.55, metrics
    assert len({tuple(row) for row in metrics["confusion_matrix"]}) > 1
    predicted = [sum(col) for col in zip(*metrics["confusion_matrix"], strict=True)]
    assert sum(c > 0 for c in predicted) >= 2  # predicts more than one class


def test_real_cache_is_reused(prepared_real):
    """A second prepare over the same cache re-encodes nothing and gives the same features."""
    first = prepared_real
    again = prepare(
        REAL_MVSA, EncoderSettings(), limit=LIMIT, cache_dir=first.extra["cache_dir"], progress=False, **FRACTIONS
    )
    assert again.val.ids == first.val.ids and again.test.ids == first.test.ids  # the split is seeded
    assert again.encode_seconds < 0.5 * first.encode_seconds
    for name in ("text", "image"):
        assert torch.equal(again.val.modalities[name].pooled, first.val.modalities[name].pooled)
