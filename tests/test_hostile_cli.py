"""The bad-input corpus through the command line: labels named with --labels, manifests naming files outside their
folder, and a run folder reused by a second run."""

from __future__ import annotations

import json
from pathlib import Path

import badinputs as bad
import pytest
from conftest import TinyModels, invoke

pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI changes logging and env


def text_args(models: TinyModels, cache: Path) -> list[str]:
    return [
        "--text-model", str(models.bert), "--image-model", "none", "--max-length", "16", "--epochs", "1",
        "--cache-dir", str(cache), "--device", "cpu", "-q",
    ]  # fmt: skip


def test_labels_option_names_the_classes(tiny_models: TinyModels, tmp_path: Path):
    data = bad.cased_labels_csv(tmp_path)
    run = tmp_path / "run"
    labels = "Negative, Neutral,Positive"
    result = invoke("train", "--data", data, "--out", run, "--labels", labels, *text_args(tiny_models, tmp_path))
    assert result.exit_code == 0, result.output
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["labels"] == ["Negative", "Neutral", "Positive"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data_problems"] == {"unknown_label": 1}
    assert "'angry'" in (run / "problems.txt").read_text()
    # evaluating keeps the checkpoint's classes and spelling, whatever case the data uses
    evaluated = invoke("evaluate", run / "checkpoint", "--data", data, "--split", "all", "--cache-dir", tmp_path, "-q")
    assert evaluated.exit_code == 0, evaluated.output
    assert "n=12" in evaluated.output and "unknown_label=1" in evaluated.output


def test_labels_option_is_checked(tiny_models: TinyModels, tmp_path: Path):
    from typer.testing import CliRunner

    from fusent.cli import app

    data = bad.cased_labels_csv(tmp_path)
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--labels", "positive", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "two or more class names" in result.output


def test_manifest_outside_paths_need_allow_outside(tiny_models: TinyModels, tmp_path: Path):
    data = bad.traversal_manifest(tmp_path / "data")
    rows = [f"u{k},good day,../../etc/passwd," for k in range(3)]
    data.write_text(data.read_text() + "\n".join(rows) + "\n")
    ckpt_run = tmp_path / "run"
    labelled = tmp_path / "text.csv"
    labelled.write_text("id,text,label\n" + "".join(f"{k},{'good' if k % 2 else 'bad'},{k % 2}\n" for k in range(8)))
    assert invoke("train", "--data", labelled, "--out", ckpt_run, *text_args(tiny_models, tmp_path)).exit_code == 0
    out = tmp_path / "pred.csv"
    result = invoke("predict", ckpt_run / "checkpoint", "--data", data, "--out", out, "--cache-dir", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert "outside_data_folder=6" in result.output  # the summary on stderr (labelled rows are read too)
    assert len(out.read_text().splitlines()) == 4  # every row still predicted, from its text
    allowed = invoke(
        "predict", ckpt_run / "checkpoint", "--data", data, "--out", out, "--cache-dir", tmp_path, "-q",
        "--allow-outside",
    )  # fmt: skip
    assert allowed.exit_code == 0 and "outside_data_folder" not in allowed.output


def test_a_reused_run_folder_keeps_no_stale_predictions(tiny_models: TinyModels, tmp_path: Path):
    with_unlabelled = tmp_path / "a.csv"
    rows = "".join(f"{k},{'good' if k % 2 else 'bad'},{'pos' if k % 2 else 'neg'}\n" for k in range(8))
    with_unlabelled.write_text("id,text,label\n" + rows + "u1,good day,\n")
    only_labelled = tmp_path / "b.csv"
    only_labelled.write_text("id,text,label\n" + rows)
    run = tmp_path / "run"
    assert invoke("train", "--data", with_unlabelled, "--out", run, *text_args(tiny_models, tmp_path)).exit_code == 0
    assert (run / "predictions.txt").exists()
    assert invoke("train", "--data", only_labelled, "--out", run, *text_args(tiny_models, tmp_path)).exit_code == 0
    assert not (run / "predictions.txt").exists()
    assert not [p for p in run.rglob("*.tmp")]
