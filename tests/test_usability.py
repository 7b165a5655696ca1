"""A new user's mistakes and first steps: one-line usage errors (exit 2, traceback only with --debug), options
checked once where configs are built, a fast torch-free --help / --version, unknown Hugging Face ids refused at
once offline, the pipeline-shaped Python API, and `fusent predict`'s output options."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TinyModels, invoke

from fusent.options import EncoderSettings, OptionError, TrainConfig

pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI changes logging and env

ROOT = Path(__file__).resolve().parents[1]
ROWS = "".join(f"{k},{'good day' if k % 2 else 'bad day'},{'pos' if k % 2 else 'neg'}\n" for k in range(10))


def run_cli(*args: object, env: dict[str, str] | None = None):
    """``fusent ARGS`` in-process as a user runs it (no --debug): errors are caught and said in one line."""
    from typer.testing import CliRunner

    from fusent.cli import app

    return CliRunner(env=env).invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    path = tmp_path / "posts.csv"
    path.write_text("id,text,label\n" + ROWS)
    return path


# ------------------------------------------------------------------------------------------------ 12: usage errors


def test_usage_errors_are_one_line_with_exit_code_2(tmp_path: Path, good_csv: Path, monkeypatch):
    weird = tmp_path / "weird"
    weird.mkdir()
    (weird / "notes.txt").write_text("hello")
    empty = tmp_path / "empty.csv"
    empty.write_text("id,text,label\n")
    ids_only = tmp_path / "ids.csv"
    ids_only.write_text("id,label\n" + "".join(f"{k},{'pos' if k % 2 else 'neg'}\n" for k in range(10)))
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "config.json").write_text("{}")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cases = {
        ("train", "--data", tmp_path / "missing"): "no dataset at",
        ("train", "--data", weird): "is neither a RAVDESS folder",
        ("predict", run, "--data", good_csv): f"pass {run / 'checkpoint'}",
        ("train", "--data", empty): "has no rows",
        ("train", "--data", good_csv, "--text-pooling", "foo"): "'--text-pooling'",
        ("train", "--data", good_csv, "--head-arg", "foo=1"): "takes no 'foo'",
        ("train", "--data", good_csv, "--device", "cuda", "--image-model", "none"): "no CUDA device",
        ("train", "--data", good_csv, "--class-weights", "balnced"): "'balnced' is not one of",
        ("train", "--data", ids_only, "--image-model", "none"): "no text, image, audio or video column",
        ("train", "--data", good_csv, "--lr", "0"): "--lr must be > 0",
    }
    for args, expected in cases.items():
        line = one_line_error(run_cli(*args))
        assert expected in line, (args, line)


def test_debug_shows_the_traceback(tmp_path: Path):
    result = run_cli("--debug", "train", "--data", tmp_path / "missing")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "error: no dataset at" in result.stderr


def test_options_are_checked_where_configs_are_built():
    """The Python API (and the service) get the same checks as the CLI; StrEnum values still equal their strings."""
    with pytest.raises(OptionError, match=r"--class-weights must be one of none \| balanced \| sqrt; got 'balnced'"):
        TrainConfig(class_weights="balnced")
    for bad in ({"loss": "hinge"}, {"optimizer": "adam"}, {"schedule": "step"}, {"epochs": 0}, {"momentum": 1.5}):
        with pytest.raises(OptionError):
            TrainConfig(**bad)
    for bad in ({"text_pooling": "max"}, {"device": "gpu"}, {"max_length": 0}, {"text_model": " "}):
        with pytest.raises(OptionError):
            EncoderSettings(**bad)
    config = TrainConfig(class_weights="sqrt", loss="focal")
    assert config.class_weights == "sqrt" and json.loads(json.dumps(config.__dict__))["loss"] == "focal"
    assert EncoderSettings(text_pooling="last4", device="cuda:1").text_config()["pooling"] == "last4"


def test_help_lists_the_choices():
    text = run_cli("train", "--help", env={"COLUMNS": "80"}).output
    for choices in ("none|balanced|sqrt", "cls|mean|last4", "adamw|sgd", "constant|cosine|linear", "cpu|cuda|mps"):
        assert choices in text, choices


# ------------------------------------------------------------------------------------------------ 13: offline hub


def test_unknown_hub_id_offline_fails_fast(tmp_path: Path, monkeypatch, tiny_models: TinyModels, good_csv: Path):
    from fusent.encoders import TextEncoder
    from fusent.hub import check_model_available

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    started = time.perf_counter()
    with pytest.raises(OptionError, match="fusent models") as caught:
        TextEncoder("nobody/no-such-model", device="cpu")
    assert time.perf_counter() - started < 5
    assert "--text-model PATH" in str(caught.value)
    with pytest.raises(OptionError, match="does not exist"):
        check_model_available(str(tmp_path / "no" / "folder"), "image")
    check_model_available(str(tiny_models.bert), "text")  # a local folder is always fine
    result = run_cli("train", "--data", good_csv, "--image-model", "none", "--text-model", "nobody/x", "-q")
    line = one_line_error(result)
    assert "fusent models" in line and "--text-model" in line
    import logging

    assert len(logging.getLogger().handlers) == 1 and not logging.getLogger("fusent").handlers  # not added twice
    assert "cached Hugging Face models" in run_cli("models").output


# ------------------------------------------------------------------------------------------------ 14: fast help


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=120
    )


def test_cli_and_package_import_without_torch():
    code = (
        "import sys, fusent, fusent.cli, fusent.options, fusent.prediction_file; "
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'numpy') if m in sys.modules))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_and_version_are_quick_and_plain():
    from fusent import __version__

    started = time.perf_counter()
    version = subprocess.run(
        [sys.executable, "-m", "fusent.cli", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    seconds = time.perf_counter() - started
    assert version.returncode == 0 and version.stdout.strip() == f"fusent {__version__}"
    assert seconds < 5  # about 0.2 s of CPU; generous for a loaded test machine (torch alone took 5-12 s)
    for args in ([], ["serve"], ["train"], ["predict"]):
        text = run_cli(*args, "--help", env={"COLUMNS": "80"}).output
        assert not any(ch in text for ch in "╭│─╰"), args  # no rich boxes
        assert max(len(line) for line in text.splitlines()) <= 80, args
    assert "fusent[serve]" in run_cli("serve", "--help", env={"COLUMNS": "80"}).output.replace("\n", "")


# ------------------------------------------------------------------------------------------------ 15: Python API


def test_public_api_is_exported_lazily():
    done = _python(
        "import sys, fusent; assert 'torch' not in sys.modules; from fusent import Predictor, TrainConfig; "
        "assert 'torch' in sys.modules; print(Predictor.__name__, TrainConfig.__module__)"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Predictor", "fusent.options"]


def test_predictor_is_callable_like_a_pipeline(tmp_path: Path, tiny_models: TinyModels):
    from test_predict import LABELS, PICTURE, make_checkpoint

    from fusent import Predictor

    clf = Predictor.from_pretrained(make_checkpoint(tmp_path, tiny_models), use_cache=False, device="cpu")
    one = clf("a good day", image=PICTURE)
    assert one == clf.predict(text="a good day", image=PICTURE) and len(one) == len(LABELS)
    assert clf({"text": "a good day", "image": PICTURE}) == one
    best = clf("a good day", image=PICTURE, top_k=1)
    assert len(best) == 1 and best[0] == one[0] and best.contributions == one.contributions
    many = clf(["a good day", {"text": "bad", "image": PICTURE}], top_k=2)
    assert [len(p) for p in many] == [2, 2] and many[0][0]["label"] == clf("a good day")[0]["label"]
    assert many[0][0]["score"] == pytest.approx(clf("a good day")[0]["score"], abs=1e-5)  # batched: padding
    proba = clf.predict_proba([{"text": "a good day", "image": PICTURE}, {"text": "bad"}])
    assert proba.shape == (2, len(LABELS)) and proba.sum(1) == pytest.approx([1, 1], abs=1e-5)
    assert proba[0, LABELS.index(one[0]["label"])] == pytest.approx(one[0]["score"])


# ------------------------------------------------------------------------------------------------ 16: predict


def test_predict_output_options(tmp_path: Path, tiny_models: TinyModels):
    data = tmp_path / "posts.csv"
    data.write_text("id,text,label\n" + ROWS + "u1,good morning,\nu2,bad night,\n")
    run = tmp_path / "run"
    train_args = ["--text-model", tiny_models.bert, "--image-model", "none", "--max-length", "16", "--epochs", "1"]
    common = ["--cache-dir", tmp_path / "cache", "--device", "cpu", "-q"]
    assert invoke("train", "--data", data, "--out", run, *train_args, *common).exit_code == 0
    out = tmp_path / "pred.csv"
    result = invoke(
        "predict", run / "checkpoint", "--data", data, "--out", out, "--proba", "--batch-size", "1", *common
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["id", "label", "p_neg", "p_pos"]  # the manifest's own column names
    assert [r["id"] for r in rows] == ["u1", "u2"]
    for row in rows:
        assert float(row["p_neg"]) + float(row["p_pos"]) == pytest.approx(1, abs=1e-4)
        assert row["label"] == max(("neg", "pos"), key=lambda c: float(row[f"p_{c}"]))
    jsonl = invoke("predict", run / "checkpoint", "--data", data, "--format", "jsonl", *common)
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["u1", "u2"] and set(lines[0]) == {"id", "label"}
    assert [line["label"] for line in lines] == [r["label"] for r in rows]


def test_prediction_format_writes_in_pieces_as_at_once():
    from fusent.prediction_file import PredictionFormat

    form = PredictionFormat("id,label", "csv", ["a", "b"])
    whole = form.header_text() + form.rows_text(["1", "2"], ["a", "b"], [[0.7, 0.3], [0.1, 0.9]])
    pieces = (
        form.header_text() + form.rows_text(["1"], ["a"], [[0.7, 0.3]]) + form.rows_text(["2"], ["b"], [[0.1, 0.9]])
    )
    assert whole == pieces == "id,label,p_a,p_b\n1,a,0.7,0.3\n2,b,0.1,0.9\n"
    scores = PredictionFormat("id,score", "jsonl").rows_text(["x"], [0.123456])
    assert json.loads(scores) == {"id": "x", "score": 0.1235}
    with pytest.raises(OptionError, match="--format"):
        PredictionFormat("id,label", "xml")
