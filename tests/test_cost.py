"""The cost report: wall time per stage, peak RSS (and peak GPU memory on a GPU) in metrics.json / compare.json
and printed at the end of ``fusent train`` and ``fusent compare``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import MvsaSpec, TinyModels, invoke

from fusent import cost

pytestmark = pytest.mark.usefixtures("restore_process_state")


def test_stages_are_exclusive_and_only_recorded_inside_a_recording():
    with cost.stage("encode"):  # no recording: nothing happens
        pass
    assert cost.current() is None
    with cost.recording() as costs:
        with cost.stage("encode"):
            time.sleep(0.02)
            with cost.stage("decode"):
                time.sleep(0.05)
            time.sleep(0.02)
        summary = costs.summary()
    seconds = summary["stage_seconds"]
    assert seconds["decode"] >= 0.05 and seconds["encode"] >= 0.04
    assert list(seconds)[:5] == ["load", "decode", "encode", "train", "evaluate"] and seconds["train"] == 0
    # decode nested in encode is not counted twice: the stages add up to no more than the wall time (4-decimal rounding)
    assert seconds["decode"] + seconds["encode"] <= summary["wall_seconds"] + 1e-3 and summary["peak_rss_mb"] > 0
    assert "peak_gpu_mb" not in summary  # CUDA never used here
    table = cost.format_costs(summary)
    assert "decode" in table and "peak RSS" in table
    assert cost.current() is None


def _model_args(models: TinyModels, cache: Path) -> list[object]:
    return ["--text-model", models.bert, "--image-model", models.vit, "--max-length", "32", "--cache-dir", cache,
            "--device", "cpu", "-q"]  # fmt: skip


def _check(summary: dict) -> None:
    for stage in cost.STAGES:  # a fresh cache: images are decoded and encoded
        assert summary["stage_seconds"][stage] > 0, stage
    total = sum(summary["stage_seconds"].values()) + summary["other_seconds"]
    assert summary["wall_seconds"] == pytest.approx(total, abs=0.01)
    assert summary["peak_rss_mb"] > 50


def test_train_and_compare_record_their_cost(tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path):
    result = invoke(
        "train", "--data", tiny_mvsa.root, "--out", tmp_path / "run", "--epochs", "2", "--batch-size", "8",
        *_model_args(tiny_models, tmp_path / "cache"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _check(json.loads((tmp_path / "run" / "metrics.json").read_text())["cost"])
    assert "cost            seconds" in result.output and "peak RSS" in result.output

    result = invoke(
        "compare", "--data", tiny_mvsa.root, "--out", tmp_path / "cmp", "--heads", "native_combine", "--seeds", "1",
        "--epochs", "1", "--workers", "1", *_model_args(tiny_models, tmp_path / "cache2"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    _check(json.loads((tmp_path / "cmp" / "compare.json").read_text())["provenance"]["cost"])
    assert "peak RSS" in result.output and '"stage_seconds"' in (tmp_path / "cmp" / "compare.md").read_text()
