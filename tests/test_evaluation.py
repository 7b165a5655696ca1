"""Honest evaluation: three-way and cross-validation splits, split files, probability metrics against hand-computed
values, temperature scaling, learning-rate schedules, and that the test part never feeds selection."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MvsaSpec, TinyModels
from typer.testing import CliRunner

from fusent.calibration import fit_temperature, nll
from fusent.cli import app
from fusent.data import DatasetBundle, ProblemReport, Sample
from fusent.data.split import cv_splits, read_split_file, split_labelled, write_split_file
from fusent.metrics import average_precision, binary_roc_auc, expected_calibration_error, probability_metrics
from fusent.train_flow import fit
from fusent.training import TrainConfig, lr_factor


def _bundle(counts: dict[str, int], groups: int | None = None, task: str = "classification") -> DatasetBundle:
    samples = []
    for label, n in counts.items():
        for k in range(n):
            sid = f"{label}{k:03d}"
            group = None if groups is None else f"g{k % groups}"
            if task == "regression":
                samples.append(Sample(id=sid, text="x", score=float(k % 7 - 3), group=group))
            else:
                samples.append(Sample(id=sid, text="x", label=label, group=group))
    labels = [] if task == "regression" else list(counts)
    return DatasetBundle(samples, [], labels, ProblemReport(), name="synthetic", task=task)


# ------------------------------------------------------------------------------------------------------ splits


def test_three_way_split_is_stratified_disjoint_and_seeded():
    bundle = _bundle({"a": 60, "b": 30, "c": 10})
    split = split_labelled(bundle)  # 80 / 10 / 10
    assert (len(split.train), len(split.val), len(split.test)) == (80, 10, 10)
    ids = [{s.id for s in part} for part in (split.train, split.val, split.test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert ids[0] | ids[1] | ids[2] == {s.id for s in bundle.labelled}
    assert sorted(s.label for s in split.test) == ["a"] * 6 + ["b"] * 3 + ["c"]  # class proportions kept
    again, other = split_labelled(bundle), split_labelled(bundle, seed=14)
    assert [s.id for s in again.test] == [s.id for s in split.test]
    assert [s.id for s in other.test] != [s.id for s in split.test]
    no_test = split_labelled(bundle, val_fraction=0.2, test_fraction=0)
    assert not no_test.test and len(no_test.val) == 20
    with pytest.raises(ValueError, match="sum < 1"):
        split_labelled(bundle, val_fraction=0.5, test_fraction=0.5)


def test_grouped_split_keeps_each_group_on_one_side():
    bundle = _bundle({"a": 40, "b": 40}, groups=16)
    split = split_labelled(bundle)
    groups = [{s.group for s in part} for part in (split.train, split.val, split.test)]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert split.test and split.val


def test_split_file_round_trips_and_is_checked(tmp_path: Path):
    bundle = _bundle({"a": 30, "b": 20})
    split = split_labelled(bundle, seed=5)
    path = write_split_file(tmp_path / "split.csv", split)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", "part"] and len(rows) == 51
    again = split_labelled(bundle, seed=99, split_file=path)  # the file wins over fraction and seed
    for part in ("train", "val", "test"):
        assert sorted(s.id for s in getattr(again, part)) == sorted(s.id for s in getattr(split, part))
    assert again.info == {"kind": "file", "file": str(path)}
    # ids the data does not have: written for other data
    (tmp_path / "other.csv").write_text("id,part\nzzz,train\n")
    with pytest.raises(ValueError, match="not labelled samples"):
        split_labelled(bundle, split_file=tmp_path / "other.csv")
    (tmp_path / "bad.csv").write_text("id,part\na000,dev\n")
    with pytest.raises(ValueError, match="unknown part"):
        split_labelled(bundle, split_file=tmp_path / "bad.csv")
    # a labelled sample missing from the file is reported, not silently used
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(["id,part", *(f"{sid},{p}" for sid, p in list(split.assignment().items())[1:])]))
    fresh = _bundle({"a": 30, "b": 20})
    split_labelled(fresh, split_file=partial)
    assert fresh.report.counts["not_in_split_file"] == 1


@pytest.mark.parametrize("groups", [None, 10])
def test_cv_folds_cover_every_sample_once_as_test(groups):
    bundle = _bundle({"a": 40, "b": 20}, groups=groups)
    folds = cv_splits(bundle, 5, seed=3)
    assert len(folds) == 5
    tested = [s.id for f in folds for s in f.test]
    assert sorted(tested) == sorted(s.id for s in bundle.labelled)  # each sample is a test sample exactly once
    for fold in folds:
        parts = [{s.id for s in p} for p in (fold.train, fold.val, fold.test)]
        assert not parts[0] & parts[2] and not parts[1] & parts[2] and not parts[0] & parts[1]
        assert 0.05 < len(fold.val) / 60 < 0.2
        if groups:
            g = [{s.group for s in p} for p in (fold.train, fold.val, fold.test)]
            assert not g[0] & g[2] and not g[1] & g[2]
        else:
            assert sorted(s.label for s in fold.test).count("b") == 4  # stratified: 20 "b" over 5 folds


def test_cv_split_file_round_trips(tmp_path: Path):
    bundle = _bundle({"a": 20, "b": 20})
    folds = cv_splits(bundle, 4)
    path = write_split_file(tmp_path / "folds.csv", folds)
    read = read_split_file(path)
    assert len(read) == 4 and read[2] == folds[2].assignment()


def test_regression_cv_is_unstratified_and_grouped():
    bundle = _bundle({"v": 50}, groups=10, task="regression")
    folds = cv_splits(bundle, 5)
    for fold in folds:
        assert not {s.group for s in fold.train} & {s.group for s in fold.test}


# ----------------------------------------------------------------------------------------------------- metrics


def test_roc_auc_hand_computed():
    # positives 0.9, 0.4; negatives 0.8, 0.4, 0.1: pairs (pos > neg) = 0.9>all (3) + 0.4>0.1 (1) + tie 0.4=0.4 (0.5)
    y = np.array([1, 0, 1, 0, 0], dtype=bool)
    score = np.array([0.9, 0.8, 0.4, 0.4, 0.1])
    assert binary_roc_auc(y, score) == pytest.approx(4.5 / 6)
    assert binary_roc_auc(np.array([True, True]), np.array([0.1, 0.2])) != binary_roc_auc(y, score)  # NaN
    assert math.isnan(binary_roc_auc(np.array([True, True]), np.array([0.1, 0.2])))


def test_average_precision_hand_computed():
    # ranked: 0.9 (pos) 0.8 (neg) 0.7 (pos) 0.1 (neg): AP = 0.5 * 1/1 + 0.5 * 2/3
    y = np.array([1, 0, 1, 0], dtype=bool)
    assert average_precision(y, np.array([0.9, 0.8, 0.7, 0.1])) == pytest.approx(0.5 + 1 / 3)


def test_ece_hand_computed():
    # two bins hit: conf 0.9 (2 samples, 1 right: |0.5 - 0.9|) and conf 0.6 (2 samples, 2 right: |1 - 0.6|)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = [0, 1, 1, 1]
    assert expected_calibration_error(y, probs, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error([0, 1], perfect) == pytest.approx(0.0)


def test_probability_metrics_macro_means_over_classes():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    m = probability_metrics([0, 1, 2, 0], probs, ["a", "b", "c"])
    assert m["roc_auc_per_class"] == {"a": 1.0, "b": 1.0, "c": 1.0} and m["roc_auc_macro"] == 1.0
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.7, 0.7, 0.6])))


def test_temperature_scaling_fixes_overconfidence():
    torch.manual_seed(0)
    y = torch.randint(0, 3, (400,))
    logits = torch.randn(400, 3)
    logits[torch.arange(400), y] += 1.0  # informative...
    overconfident = logits * 6  # ...but far too sharp
    t = fit_temperature(overconfident, y)
    assert 4.0 < t < 9.0
    assert nll(overconfident, y, t) < nll(overconfident, y, 1.0)
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0


# ----------------------------------------------------------------------------------------------------- trainer


def test_lr_schedules():
    warm = lr_factor("cosine", warmup_steps=4, total_steps=14)
    assert [round(warm(s), 3) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert warm(4) == pytest.approx(1.0) and warm(9) == pytest.approx(0.5) and warm(14) == pytest.approx(0.0)
    linear = lr_factor("linear", 0, 10)
    assert linear(5) == pytest.approx(0.5)
    assert lr_factor("constant", 0, 10)(7) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("step", 0, 10)


def test_sgd_and_schedule_train_and_are_recorded(prepared_tiny):
    config = TrainConfig(epochs=2, batch_size=8, optimizer="sgd", lr=0.05, schedule="cosine", warmup_epochs=0.5)
    model, result = fit(prepared_tiny, "native_cat", config, progress=False)
    assert result.best_epoch >= 1 and len(result.history) == 2
    assert model.config.training["optimizer"] == "sgd" and model.config.training["schedule"] == "cosine"
    with pytest.raises(ValueError, match="optimizer"):
        fit(prepared_tiny, "native_cat", replace(config, optimizer="lion"), progress=False)


def test_the_test_part_never_feeds_training_or_selection(prepared_tiny):
    """Training with a different test part (other samples, scrambled targets) gives the same model bit for bit:
    nothing of the test part reaches the epoch choice or the weights."""
    config = TrainConfig(epochs=3, batch_size=8, seed=4)
    model_a, result_a = fit(prepared_tiny, "native_cat", config, progress=False)
    other = replace(prepared_tiny, test=prepared_tiny.train, y_test=torch.flip(prepared_tiny.y_train, [0]))
    model_b, result_b = fit(other, "native_cat", config, progress=False)
    assert result_a.best_epoch == result_b.best_epoch and result_a.history == result_b.history
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------------------------- CLI


def test_cli_cross_validation_writes_folds_and_out_of_fold_predictions(
    tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path
):
    run = tmp_path / "cv"
    args = [
        "train", "--data", tiny_mvsa.root, "--out", run, "--head", "native_cat", "--cv", "3", "--epochs", "2",
        "--batch-size", "8", "--text-model", tiny_models.bert, "--image-model", tiny_models.vit, "--max-length", "32",
        "--device", "cpu", "--cache-dir", tmp_path / "cache", "-q",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "3-fold cross-validation" in result.stdout and "mean" in result.stdout
    metrics = json.loads((run / "cv_metrics.json").read_text())
    assert len(metrics["per_fold"]) == 3
    f1 = [f["test"]["f1_macro"] for f in metrics["per_fold"]]
    assert metrics["mean_std"]["f1_macro"]["mean"] == pytest.approx(np.mean(f1))
    assert metrics["mean_std"]["f1_macro"]["std"] == pytest.approx(np.std(f1, ddof=1))
    oof = list(csv.DictReader((run / "oof_predictions.csv").open()))
    assert sorted(r["id"] for r in oof) == sorted(tiny_mvsa.labels)  # every labelled post predicted once
    assert all(r["true"] == tiny_mvsa.labels[r["id"]] for r in oof)
    assert all(abs(sum(float(r[f"p_{c}"]) for c in ("negative", "neutral", "positive")) - 1) < 1e-4 for r in oof)
    folds = read_split_file(run / "split.csv")
    assert len(folds) == 3
    # --split-file with the folds reproduces them
    again = CliRunner().invoke(
        app, [str(a) for a in args[:3]] + ["--out", str(tmp_path / "again")] + [str(a) for a in args[5:]]
        + ["--split-file", str(run / "split.csv"), "--split-seed", "99"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert read_split_file(tmp_path / "again" / "split.csv") == folds
