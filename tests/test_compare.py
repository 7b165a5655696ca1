"""Significance tests against hand/scipy values, and `fusent compare` end to end on the tiny fixture."""

from __future__ import annotations

import csv
import math

import pytest
from scipy import stats
from typer.testing import CliRunner

from fusent.cli import app
from fusent.compare import run_compare, summarise
from fusent.compare_report import write_report
from fusent.stats import mcnemar_exact, one_way_anova, paired_t_test
from fusent.training import TrainConfig


def test_paired_t_test_matches_the_formula():
    a, b = [0.61, 0.64, 0.60, 0.66, 0.63], [0.58, 0.60, 0.59, 0.61, 0.62]
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 4)
    t_hand = mean / (sd / math.sqrt(5))
    t, p = paired_t_test(a, b)
    assert t == pytest.approx(t_hand, rel=1e-9)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), df=4), rel=1e-9)
    assert all(math.isnan(x) for x in paired_t_test([0.5], [0.4]))  # one pair: undefined
    assert all(math.isnan(x) for x in paired_t_test([0.5, 0.6], [0.4, 0.5]))  # constant difference


def test_mcnemar_exact_hand_computed():
    y = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    a = [0, 0, 0, 1, 1, 1, 1, 0, 2, 2]  # A wrong on 3 and 7
    b = [1, 1, 0, 0, 1, 0, 1, 1, 2, 0]  # B wrong on 0, 1, 5, 9
    # only A right: 0, 1, 5, 9 (b=4); only B right: 3, 7 (c=2); p = 2 * P(X <= 2 | n=6, 1/2) = 2 * 22/64
    result = mcnemar_exact(y, a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (4, 2)
    assert result["p"] == pytest.approx(2 * 22 / 64)
    assert mcnemar_exact(y, a, a)["p"] == 1.0


def test_one_way_anova_matches_scipy_and_hand():
    groups = [[0.60, 0.62, 0.61], [0.70, 0.72, 0.71], [0.65, 0.66, 0.64]]
    f, p = one_way_anova(groups)
    # between SS = 3 * sum((m_i - 0.6567)^2) over means 0.61, 0.71, 0.65; within SS = 3 groups * 0.0002
    grand = sum(map(sum, groups)) / 9
    between = sum(3 * (sum(g) / 3 - grand) ** 2 for g in groups) / 2
    within = sum((x - sum(g) / 3) ** 2 for g in groups for x in g) / 6
    assert f == pytest.approx(between / within, rel=1e-9)
    assert p == pytest.approx(stats.f_oneway(*groups).pvalue, rel=1e-9)
    assert all(math.isnan(x) for x in one_way_anova([[0.5, 0.5], [0.5, 0.5]]))


def test_compare_end_to_end_on_tiny_features(prepared_tiny, tmp_path):
    config = TrainConfig(epochs=2, batch_size=8)
    heads = ["native_cat", "weighted", "late", "ote"]
    runs = run_compare(prepared_tiny, prepared_tiny, heads, [0, 1], config, progress=False)
    assert len(runs) == 8 and {r.head for r in runs} == set(heads)
    assert all(r.test is not None and r.ids == prepared_tiny.test.ids for r in runs)  # scored once on test
    summary = summarise(runs, prepared_tiny.bundle.labels, "classification")
    assert summary["best"] in heads and summary["part"] == "test"
    best_row = next(r for r in summary["rows"] if r["head"] == summary["best"])
    assert best_row["val_f1_macro"] == max(r["val_f1_macro"] for r in summary["rows"])  # chosen on validation
    assert len(summary["pairs"]) == 6 and all(p["df"] == 1 for p in summary["pairs"])
    weighted = next(r for r in summary["rows"] if r["head"] == "weighted")
    assert sum(weighted["learned"]["modality_weights"].values()) == pytest.approx(1.0)
    paths = write_report(summary, runs, tmp_path / "report")
    names = {p.name for p in paths}
    assert {"compare.md", "compare.csv", "compare_runs.csv", "compare.tex", "compare.html", "compare.json"} <= names
    assert {"bars.png", "confusion_best.png"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    with (tmp_path / "report" / "compare.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["head"] for r in rows} == set(heads) and {r["part"] for r in rows} == {"test"}
    with (tmp_path / "report" / "compare_runs.csv").open() as fh:
        per_run = list(csv.DictReader(fh))
    assert len(per_run) == 8 and {"val_f1_macro", "test_f1_macro", "test_roc_auc_macro"} <= set(per_run[0])
    assert "ANOVA" in (tmp_path / "report" / "compare.md").read_text()


def test_compare_cli(tiny_mvsa, tiny_models, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "compare", "--data", str(tiny_mvsa.root), "--heads", "native_combine,cmac", "--seeds", "2",
            "--epochs", "2", "--text-model", str(tiny_models.bert), "--image-model", str(tiny_models.vit),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "cmp"), "-q",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "best head by validation macro-F1" in result.output
    assert (tmp_path / "cmp" / "per_class_f1_best.png").stat().st_size > 0
    bad = CliRunner().invoke(app, ["compare", "--data", str(tiny_mvsa.root), "--heads", "nope"])
    assert bad.exit_code != 0 and "nope" in bad.output


def test_compare_cli_patience_and_workers(tiny_mvsa, tiny_models, tmp_path, monkeypatch):
    import fusent.compare
    from fusent.cli import COMPARE_PATIENCE

    seen = []

    def fake_run_compare(pooled, with_states, heads, seeds, config, head_kwargs, progress, workers, *rest):
        seen.append((config.patience, workers))
        raise SystemExit(0)

    monkeypatch.setattr(fusent.compare, "run_compare", fake_run_compare)
    args = [
        "compare", "--data", str(tiny_mvsa.root), "--heads", "native_cat", "--text-model", str(tiny_models.bert),
        "--image-model", str(tiny_models.vit), "--cache-dir", str(tmp_path / "cache"), "-q",
    ]  # fmt: skip
    CliRunner().invoke(app, args)
    CliRunner().invoke(app, [*args, "--patience", "9", "--workers", "1"])
    assert seen[0][0] == COMPARE_PATIENCE and seen[0][1] >= 1
    assert seen[1] == (9, 1)
    assert TrainConfig().patience == 8  # `fusent train` keeps the trainer's own default


def test_compare_in_two_worker_processes_gives_the_same_runs(prepared_tiny):
    config = TrainConfig(epochs=2, batch_size=8)
    heads = ["native_cat", "ote"]
    one = run_compare(prepared_tiny, prepared_tiny, heads, [0, 1], config, progress=False, workers=1)
    two = run_compare(prepared_tiny, prepared_tiny, heads, [0, 1], config, progress=False, workers=2)
    assert [(r.head, r.seed) for r in two] == [(r.head, r.seed) for r in one]  # in job order, not finishing order
    for a, b in zip(one, two, strict=True):
        assert b.pred == a.pred
        assert b.val["f1_macro"] == pytest.approx(a.val["f1_macro"])
        assert b.test["f1_macro"] == pytest.approx(a.test["f1_macro"])
        assert len(b.history) == len(a.history)


def test_one_seed_reports_no_spread(prepared_tiny, tmp_path):
    config = TrainConfig(epochs=1, batch_size=8)
    runs = run_compare(prepared_tiny, prepared_tiny, ["native_cat"], [0], config, progress=False)
    summary = summarise(runs, prepared_tiny.bundle.labels, "classification")
    assert math.isnan(summary["rows"][0]["f1_macro_std"])  # one seed has no std, not a std of 0
    write_report(summary, runs, tmp_path)
    row = next(line for line in (tmp_path / "compare.md").read_text().splitlines() if line.startswith("| native_cat"))
    assert "±" not in row and f"{summary['rows'][0]['f1_macro']:.4f}" in row
    assert not summary["warnings"]  # one head: no pair to test, nothing to warn about


def test_image_patches_pooled_once_match_the_heads_own_pooling(prepared_tiny):
    from dataclasses import replace

    import torch

    from fusent.compare import pool_image_patches
    from fusent.features import ModalityFeatures
    from fusent.fusion import create_head

    torch.manual_seed(0)
    n, dim = 5, 16
    states = [torch.randn(1 + 36, dim) for _ in range(n - 1)] + [None]  # CLS + 6x6 patches; the last row has none
    pooled = [None if s is None else s.mean(0) for s in states]
    image = ModalityFeatures(states, pooled, dim)
    table = replace(prepared_tiny.train, ids=prepared_tiny.train.ids[:n], texts=prepared_tiny.train.texts[:n])
    text = table.modalities["text"]
    assert bool(text.present[:n].all())
    text = ModalityFeatures(text.states[:n], list(text.pooled[:n]), text.dim)
    table = replace(table, modalities={"text": text, "image": image})
    prepared = replace(prepared_tiny, train=table, val=table, test=table)
    once = pool_image_patches(prepared, 3)
    assert once.val.modalities["image"].lengths.tolist() == [10, 10, 10, 10, 0]  # CLS kept + 3x3
    assert once.test.modalities["image"].lengths.tolist() == [10, 10, 10, 10, 0]  # the test part too
    assert prepared.val.modalities["image"].lengths.tolist() == [37] * 4 + [0]  # the original is untouched
    head = create_head("ote", table.dims(), 3, patch_grid=3).eval()
    index = torch.arange(n)
    with torch.no_grad():
        want, got = head(table.batch(index)), head(once.val.batch(index))
    assert torch.allclose(got, want, atol=2e-3)
    assert pool_image_patches(prepared, 0) is prepared
    assert pool_image_patches(once, 3).val is once.val  # already pooled: the same table, no copy
