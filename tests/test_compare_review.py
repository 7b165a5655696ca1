"""`fusent compare` as a reviewer reads it: Holm and the other tests against hand values, per-head --head-arg,
test-part scoring with validation-only selection, every pair tested with its df, regression and cross-validated
compares, the report files (HTML self-contained, with provenance), and the warning when seeds are too few."""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import sys

import pytest
import typer
from conftest import MosiSpec, MvsaSpec, TinyModels
from scipy import stats
from typer.testing import CliRunner

from fusent.cli import _parse_head_args, app
from fusent.compare import HeadRun, head_patch_grid, states_by_grid, summarise
from fusent.compare_report import latex, zoomed_limits
from fusent.fusion import head_accepts
from fusent.stats import anova, holm, paired_t, wilcoxon_signed_rank

# ------------------------------------------------------------------------------------------------- statistics


def test_holm_matches_hand_computed_values():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06: monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 2 x 0.4 = 0.8; then max(0.8, 1 x 0.5)
    assert holm([0.3, 0.6, 0.02]) == pytest.approx([0.6, 0.6, 0.06])
    assert holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    out = holm([0.02, math.nan, 0.04])  # an untestable pair stays NaN and does not count in m
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]) == []


def test_paired_t_reports_df_and_anova_its_degrees_of_freedom():
    a, b = [0.61, 0.64, 0.60, 0.66], [0.58, 0.60, 0.59, 0.61]
    result = paired_t(a, b)
    assert result["df"] == 3 and result["mean_diff"] == pytest.approx(0.0325)
    assert result["p"] == pytest.approx(2 * stats.t.sf(abs(result["t"]), df=3))
    groups = [[0.60, 0.62, 0.61], [0.70, 0.72, 0.71], [0.65, 0.66, 0.64]]
    a = anova(groups)
    assert (a["df_between"], a["df_within"]) == (2, 6)
    assert a["p"] == pytest.approx(stats.f.sf(a["F"], 2, 6))


def test_wilcoxon_on_hand_values():
    # differences +1, +2, +3, -4, +5 (ranks 1..5): W = min(1+2+3+5, 4) = 4; of the 32 equally likely sign sets,
    # 7 have a rank sum <= 4 ({}, 1, 2, 3, 4, 1+2, 1+3): exact two-sided p = 2 * 7/32
    a, b = [2, 3, 4, 1, 6], [1, 1, 1, 5, 1]
    result = wilcoxon_signed_rank(a, b)
    assert result["W"] == 4 and result["n"] == 5
    assert result["p"] == pytest.approx(2 * 7 / 32)
    assert wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0])["p"] == 1.0  # never differ: nothing to test


# ------------------------------------------------------------------------------------------- per-head --head-arg


def test_head_accepts_reads_the_signatures():
    assert {"patch_grid", "d_model", "heads", "hidden", "dropout"} <= head_accepts("cmac")
    assert "patch_grid" not in head_accepts("native_cat") and "hidden" in head_accepts("native_cat")
    assert "uses" not in head_accepts("text_only") and "modality" not in head_accepts("text_only")  # fixed by name
    assert head_patch_grid("cmac", {"patch_grid": 2}) == 2 and head_patch_grid("ote") == 3
    assert head_patch_grid("native_cat") == 0


def test_head_args_apply_per_head():
    heads = ["cmac", "native_cat", "ote"]
    got = _parse_head_args(["cmac.patch_grid=2", "patch_grid=0", "hidden=64", "ote.dropout=0.1"], heads)
    assert got == {
        "cmac": {"patch_grid": 2, "hidden": 64},  # HEAD.key wins over the plain key, whatever the order
        "native_cat": {"hidden": 64},  # takes no patch_grid: the plain key skips it
        "ote": {"patch_grid": 0, "hidden": 64, "dropout": 0.1},
    }
    assert _parse_head_args(["d_model=64"], ["native_cat", "gated"]) == {"native_cat": {}, "gated": {"d_model": 64}}
    assert _parse_head_args(['uses=["text"]'], ["late"]) == {"late": {"uses": ["text"]}}


@pytest.mark.parametrize(
    ("items", "heads", "says"),
    [
        (["patch_grid=2"], ["native_cat", "gated"], "no selected head takes 'patch_grid'"),
        (["patch_grid=2"], ["native_cat"], "native_cat takes no 'patch_grid'"),
        (["cmac.patch_grid=2"], ["native_cat"], "'cmac' is not a selected head"),
        (["native_cat.patch_grid=2"], ["native_cat", "cmac"], "native_cat takes no 'patch_grid'"),
        (["hidden"], ["native_cat"], "expects key=value"),
        (['uses=["text"]'], ["text_only"], "text_only takes no 'uses'"),
    ],
)
def test_head_args_rejected_with_one_line(items, heads, says):
    with pytest.raises(typer.BadParameter) as info:
        _parse_head_args(items, heads)
    assert says in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ summaries without training


def _run(head, seed, val_f1, test_f1, pred, y=(0, 1, 2, 0), fold=None):
    def metrics(f1):
        per_class = {label: {"f1": f1} for label in ("a", "b", "c")}
        return {"f1_macro": f1, "accuracy": f1, "f1_weighted": f1, "roc_auc_macro": f1, "ece": 0.1,
                "per_class": per_class, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}  # fmt: skip

    ids = [f"s{i}" for i in range(len(y))]
    return HeadRun(head, seed, metrics(val_f1), metrics(test_f1), ids, list(y), list(pred), 1.0, 3, fold=fold)


def test_best_head_is_chosen_on_validation_never_on_test():
    runs = [
        *(_run("val_best", s, 0.80, 0.50 + 0.01 * s, [0, 1, 2, 1]) for s in range(3)),
        *(_run("test_best", s, 0.60, 0.90 - 0.01 * s, [0, 1, 2, 0]) for s in range(3)),
        *(_run("third", s, 0.70, 0.70 + 0.02 * s, [1, 1, 2, 0]) for s in range(3)),
    ]
    summary = summarise(runs, ["a", "b", "c"], "classification")
    assert summary["best"] == "val_best" and summary["part"] == "test"
    assert [r["head"] for r in summary["rows"]] == ["val_best", "third", "test_best"]  # validation order
    assert summary["rows"][2]["f1_macro"] == pytest.approx(0.89)  # the table shows test figures
    assert len(summary["pairs"]) == 3 and all(p["df"] == 2 for p in summary["pairs"])
    assert summary["pairs"][0]["p_t_holm"] >= summary["pairs"][0]["p_t"]
    assert (summary["anova"]["df_between"], summary["anova"]["df_within"]) == (2, 6)
    assert not summary["warnings"]
    two = summarise([r for r in runs if r.seed < 2], ["a", "b", "c"], "classification")
    assert any("only 2 seeds" in w and "not meaningful" in w for w in two["warnings"])
    tex = latex(summary)
    assert r"\toprule" in tex and r"\textbf{val\_best}" in tex and r"$\pm$" in tex


def test_without_a_test_part_the_table_says_validation_and_why():
    runs = [_run(h, s, v, v, [0, 1, 2, 0]) for h, v in (("a", 0.6), ("b", 0.5)) for s in range(3)]
    for run in runs:
        run.test = None
    summary = summarise(runs, ["a", "b", "c"], "classification", {"kind": "random", "test_fraction": 0.0})
    assert summary["part"] == "validation"
    assert any("VALIDATION" in w and "--test-fraction 0" in w for w in summary["warnings"])


def test_bar_limits_are_zoomed_so_a_hundredth_shows():
    low, high = zoomed_limits([0.70, 0.71], [0.0, 0.0])
    assert 0.69 < low < 0.70 and 0.71 < high < 0.72  # a 0.01 gap fills most of the axis
    low, high = zoomed_limits([0.60, 0.65], [0.02, float("nan")])
    assert low < 0.58 and high > 0.65
    assert zoomed_limits([0.2, 0.9], [0.3, 0.2])[0] == 0.0  # never below what the metric can be


def test_states_are_pooled_once_per_distinct_grid(prepared_tiny):
    grids = states_by_grid(prepared_tiny, ["cmac", "ote", "native_cat"], {"cmac": {"patch_grid": 2}})
    assert sorted(grids) == [2, 3]
    assert set(grids[2].val.modalities["image"].lengths.tolist()) <= {0, 5}  # CLS + 2x2 (tiny ViT: 4x4 patches)
    assert set(grids[3].val.modalities["image"].lengths.tolist()) <= {0, 10}


# ------------------------------------------------------------------------------------------------- the command


def _flat(output: str) -> str:
    """CLI output with Rich's error box and line wrapping taken out."""
    return " ".join(output.replace("│", " ").split())


def _model_args(tiny_models: TinyModels, tmp_path) -> list[str]:
    return ["--text-model", str(tiny_models.bert), "--image-model", str(tiny_models.vit), "--max-length", "32",
            "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--epochs", "2", "-q"]  # fmt: skip


def test_compare_cli_per_head_grid_report_files_and_provenance(tiny_mvsa: MvsaSpec, tiny_models, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_mvsa.root), "--heads", "cmac,native_cat", "--head-arg",
            "cmac.patch_grid=2", "--seeds", "2", "--workers", "1", "--out", str(out),
            *_model_args(tiny_models, tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["/somewhere/fusent/cli.py", *args])  # as `python -m fusent.cli ...` sets it
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "only 2 seeds per head" in result.stderr and "not meaningful" in result.stderr
    assert "best head by validation macro-F1" in result.stdout and "| df |" in result.stdout
    assert "cmac" in result.stdout and "seed 0:" not in result.stdout  # progress goes to stderr
    for name in ("compare.md", "compare.csv", "compare_runs.csv", "compare.tex", "compare.html", "compare.json",
                 "split.csv", "bars.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    page = (out / "compare.html").read_text()
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,[A-Za-z0-9+/=]{200,}'", page)) >= 3
    assert "src='http" not in page and "href=" not in page  # self-contained: nothing loaded from elsewhere
    for field in ("fusent version", "git commit", "command", "encoders", "data hash", "split file", "seeds",
                  "machine", "wall time", "torch threads"):  # fmt: skip
        assert field in page, field
    record = json.loads((out / "compare.json").read_text())
    assert record["provenance"]["command"] == "python -m fusent.cli " + shlex.join(args)
    assert len(record["provenance"]["data_hash"]) == 64 and record["provenance"]["seeds"] == [0, 1]
    assert record["provenance"]["split_file"].startswith(str(out / "split.csv"))
    assert record["part"] == "test" and record["pairs"][0]["df"] == 1
    with (out / "split.csv").open() as fh:
        assert {r["part"] for r in csv.DictReader(fh)} == {"train", "val", "test"}
    runs = {(r["head"], r["seed"]) for r in record["runs"]}
    assert runs == {("cmac", 0), ("cmac", 1), ("native_cat", 0), ("native_cat", 1)}
    assert "$\\pm$" in (out / "compare.tex").read_text() or "--" in (out / "compare.tex").read_text()


def test_compare_cli_rejects_head_args_no_selected_head_takes(tiny_mvsa: MvsaSpec, tiny_models, tmp_path):
    base = ["compare", "--data", str(tiny_mvsa.root), *_model_args(tiny_models, tmp_path)]
    bad = CliRunner().invoke(app, [*base, "--heads", "native_cat,gated", "--head-arg", "patch_grid=0"])
    assert bad.exit_code != 0 and "no selected head takes 'patch_grid'" in _flat(bad.output)
    bad = CliRunner().invoke(app, [*base, "--heads", "native_cat", "--head-arg", "cmac.patch_grid=2"])
    assert bad.exit_code != 0 and "not a selected head" in _flat(bad.output)
    assert not (tmp_path / "cache").exists()  # rejected before anything was encoded
    bad = CliRunner().invoke(app, [*base, "--heads", "native_cat", "--cv", "3", "--seeds", "2"])
    assert bad.exit_code != 0 and "leave out --seeds" in _flat(bad.output)


def test_train_head_arg_is_checked_against_its_head(tiny_mvsa: MvsaSpec, tiny_models, tmp_path):
    base = ["train", "--data", str(tiny_mvsa.root), "--out", str(tmp_path / "run"), *_model_args(tiny_models, tmp_path)]
    bad = CliRunner().invoke(app, [*base, "--head", "native_cat", "--head-arg", "patch_grid=2"])
    assert bad.exit_code != 0 and "native_cat takes no 'patch_grid'" in _flat(bad.output)


def test_regression_compare_on_tiny_mosi(tiny_mosi: MosiSpec, tiny_models, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_mosi.root), "--heads", "text_only,late", "--seeds", "3", "--workers", "1",
            "--text-model", str(tiny_models.bert), "--max-length", "32", "--device", "cpu", "--epochs", "2",
            "--cache-dir", str(tmp_path / "c"), "--out", str(out), "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best head by validation MAE" in result.stdout
    for name in ("test MAE", "test Corr", "test Acc-2 has-0", "test Acc-2 non-0", "test Acc-7", "Wilcoxon"):
        assert name in result.stdout, name
    assert "not meaningful" not in result.stderr  # 3 seeds
    record = json.loads((out / "compare.json").read_text())
    pair = record["pairs"][0]
    assert pair["sample_test"].startswith("Wilcoxon") and pair["df"] == 2 and "p_sample_holm" in pair
    assert (out / "history_best.png").stat().st_size > 0


def test_cross_validated_compare_pairs_by_fold(tiny_mvsa: MvsaSpec, tiny_models, tmp_path):
    out = tmp_path / "cv"
    args = ["compare", "--data", str(tiny_mvsa.root), "--heads", "native_cat,late", "--cv", "3", "--workers", "1",
            "--out", str(out), *_model_args(tiny_models, tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 cross-validation folds" in result.stdout
    record = json.loads((out / "compare.json").read_text())
    assert record["replicate"] == "fold" and record["replicates"] == [0, 1, 2]
    assert record["pairs"][0]["df"] == 2 and record["provenance"]["folds"] == 3
    labelled = len(tiny_mvsa.labels)
    assert record["n_scored"] == labelled  # McNemar on every sample once: the out-of-fold predictions
    with (out / "split.csv").open() as fh:
        assert {r["fold"] for r in csv.DictReader(fh)} == {"0", "1", "2"}
    with (out / "compare_runs.csv").open() as fh:
        assert sorted((r["head"], r["fold"]) for r in csv.DictReader(fh)) == sorted(
            (h, str(k)) for h in ("native_cat", "late") for k in range(3)
        )
