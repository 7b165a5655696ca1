"""The ``fusent`` command line, end to end on the tiny MVSA folder with tiny local encoders."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import pytest
from conftest import MvsaSpec, TinyModels, invoke

from fusent.fusion import available_heads

pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI changes logging and env


def model_args(models: TinyModels, cache: Path) -> list[str]:
    return [
        "--text-model",
        str(models.bert),
        "--image-model",
        str(models.vit),
        "--max-length",
        "32",
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
        "-q",
    ]


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def trained_run(tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path_factory) -> tuple[Path, Path, object]:
    """One ``fusent train`` run shared by the tests of its outputs."""
    root = tmp_path_factory.mktemp("cli")
    cache = root / "cache"
    run = root / "run"
    logging_state = logging.getLogger().handlers[:]
    previous = os.environ.get("TQDM_DISABLE")
    try:
        result = invoke(
            "train", "--data", tiny_mvsa.root, "--out", run, "--epochs", "2", "--batch-size", "8",
            *model_args(tiny_models, cache),
        )  # fmt: skip
    finally:
        logging.getLogger().handlers[:] = logging_state
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
    assert result.exit_code == 0, result.output
    return run, cache, result


def test_help_lists_commands_and_options():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "evaluate", "predict", "heads"):
        assert command in result.output
    train = invoke("train", "--help")
    assert train.exit_code == 0
    for option in (
        "--data",
        "--head",
        "--text-model",
        "--image-model",
        "--epochs",
        "--cache-dir",
        "--limit",
        "--quiet",
    ):
        assert option in train.output, option
    predict = invoke("predict", "--help")
    assert "--data" in predict.output and "--out" in predict.output and "checkpoint" in predict.output.lower()


def test_heads_command():
    result = invoke("heads")
    assert result.exit_code == 0
    assert result.stdout.split() == available_heads()


def test_train_writes_checkpoint_metrics_and_predictions(trained_run, tiny_mvsa: MvsaSpec):
    run, _, result = trained_run
    assert (run / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((run / "checkpoint" / "config.json").read_text())["head"] == "native_combine"  # the default head
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["validation"]["f1_macro"] <= 1.0
    n = len(tiny_mvsa.labels)
    assert metrics["validation"]["n"] == metrics["split"]["n_val"] == 4 and metrics["test"]["n"] == 4  # 10% each
    assert metrics["split"]["n_train"] + 8 == n and metrics["split"]["kind"] == "random"
    assert 0.0 <= metrics["test"]["roc_auc_macro"] <= 1.0 and 0.0 <= metrics["test"]["ece"] <= 1.0
    assert metrics["calibration"]["temperature"] > 0
    split = read_rows(run / "split.csv")
    assert split[0] == ["id", "part"] and len(split) == 1 + n
    assert read_rows(run / "checkpoint" / "split.csv") == split
    parts = {part: {r[0] for r in split[1:] if r[1] == part} for part in ("train", "val", "test")}
    assert not parts["test"] & (parts["train"] | parts["val"]) and len(parts["test"]) == 4
    for plot in ("roc.png", "pr.png", "reliability.png"):
        assert (run / plot).stat().st_size > 1000
    assert len(metrics["history"]) == 2
    assert metrics["data_problems"]["corrupt_image"] == 2 and metrics["data_problems"]["missing_image"] == 3
    assert metrics["data_notes"]["text_decoded_by_fallback"] == 1
    problems = (run / "problems.txt").read_text()
    assert "corrupt01.jpg" in problems and "trunc01.jpg" in problems

    rows = read_rows(run / "predictions.txt")
    assert rows[0] == ["guid", "tag"]
    assert [r[0] for r in rows[1:]] == tiny_mvsa.unlabelled  # every id, broken ones included, in file order
    assert {"tcorrupt01", "tempty01", "tnothing01"} <= {r[0] for r in rows[1:]}
    assert all(len(r) == 2 and r[1] in {"negative", "neutral", "positive"} for r in rows[1:])
    # stdout: the validation table and the problem summary
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert "validation, n=4" in result.stdout and "TEST, n=4" in result.stdout and "ROC-AUC" in result.stdout
    assert "corrupt_image=2" in result.stdout


def test_predict_command(trained_run, tiny_mvsa: MvsaSpec, tmp_path: Path):
    run, cache, _ = trained_run
    out = tmp_path / "preds.txt"
    result = invoke("predict", run / "checkpoint", "--data", tiny_mvsa.root, "--out", out, "--cache-dir", cache, "-q")
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert rows[0] == ["guid", "tag"]
    assert [r[0] for r in rows[1:]] == tiny_mvsa.unlabelled
    # the same checkpoint and features: the same labels as the ones written by train
    assert rows == read_rows(run / "predictions.txt")
    # to stdout when --out is not given, and --all adds the labelled rows
    to_stdout = invoke("predict", run / "checkpoint", "--data", tiny_mvsa.root, "--all", "--cache-dir", cache, "-q")
    assert to_stdout.exit_code == 0
    lines = to_stdout.stdout.strip().splitlines()
    assert lines[0] == "guid,tag" and len(lines) == 1 + len(tiny_mvsa.labels) + len(tiny_mvsa.unlabelled)


def test_evaluate_command(trained_run, tiny_mvsa: MvsaSpec, tmp_path: Path):
    run, cache, _ = trained_run
    metrics_path = tmp_path / "eval.json"
    result = invoke(
        "evaluate", run / "checkpoint", "--data", tiny_mvsa.root, "--cache-dir", cache, "--out", metrics_path, "-q"
    )
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and "f1" in result.stdout
    evaluated = json.loads(metrics_path.read_text())
    trained = json.loads((run / "metrics.json").read_text())
    # by default the held-out test part of the checkpoint's split: the same numbers as train printed for it
    assert evaluated["n"] == trained["test"]["n"] == 4
    assert evaluated["confusion_matrix"] == trained["test"]["confusion_matrix"]
    assert evaluated["roc_auc_macro"] == pytest.approx(trained["test"]["roc_auc_macro"])
    assert evaluated["ece"] == pytest.approx(trained["test"]["ece"])  # with the stored temperature
    # --split val: the part that selected the epoch, from split.csv or (older checkpoints) the seeded draw again
    for drop_split_file in (False, True):
        if drop_split_file:
            (run / "checkpoint" / "split.csv").rename(tmp_path / "split.csv")
        val_path = tmp_path / f"val{drop_split_file}.json"
        result = invoke(
            "evaluate", run / "checkpoint", "--data", tiny_mvsa.root, "--split", "val", "--cache-dir", cache,
            "--out", val_path, "-q",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(val_path.read_text())["confusion_matrix"] == trained["validation"]["confusion_matrix"]
    (tmp_path / "split.csv").rename(run / "checkpoint" / "split.csv")
    everything = invoke(
        "evaluate", run / "checkpoint", "--data", tiny_mvsa.root, "--split", "all", "--cache-dir", cache
    )
    assert everything.exit_code == 0
    assert f"n={len(tiny_mvsa.labels)}" in everything.stdout


def test_unknown_head_exits_nonzero(tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path):
    result = invoke(
        "train", "--data", tiny_mvsa.root, "--out", tmp_path / "run", "--head", "banana", "--epochs", "2",
        *model_args(tiny_models, tmp_path / "cache"),
    )  # fmt: skip
    assert result.exit_code != 0
    assert "banana" in result.output and "native_cat" in result.output
    assert not (tmp_path / "run").exists()


def test_missing_data_option_exits_nonzero():
    result = invoke("train", "--epochs", "2")
    assert result.exit_code != 0
    assert "--data" in result.output


def test_train_head_args_and_shared_options_reach_the_model(tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path):
    run = tmp_path / "ote"
    result = invoke(
        "train", "--data", tiny_mvsa.root, "--out", run, "--head", "ote", "--head-arg", "d_model=16",
        "--head-arg", "layers=2", "--dropout", "0.1", "--epochs", "1", "--loss", "focal", "--focal-gamma", "3",
        "--class-weights", "balanced", *model_args(tiny_models, tmp_path / "cache"), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["head_kwargs"] == {"d_model": 16, "layers": 2, "dropout": 0.1}
    assert config["training"]["loss"] == "focal" and config["training"]["focal_gamma"] == 3.0
    assert config["training"]["class_weights"] == "balanced" and config["training"]["epochs"] == 1
    compare_help = invoke("compare", "--help").output
    assert "--head-arg" in compare_help and "--seeds" in compare_help and "--text-model" in compare_help
