"""The regression task through the stack on the tiny CMU-MOSI style folder: one-output heads, the trainer's L1 /
MSE loss and MAE selection, checkpoints, the Predictor and the CLI's train / evaluate / predict / compare."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import MosiSpec, MvsaSpec, TinyModels, invoke
from typer.testing import CliRunner

from fusent.cli import app
from fusent.features import ModalityBatch
from fusent.fusion import available_heads, create_head
from fusent.losses import make_loss
from fusent.model import FusentModel, predict_logits
from fusent.predict import Predictor
from fusent.train_flow import EncoderSettings, fit, prepare
from fusent.training import TrainConfig

FAST = TrainConfig(epochs=4, batch_size=8, seed=5, lr=1e-3)


@pytest.fixture(scope="module")
def settings(tiny_models: TinyModels) -> EncoderSettings:
    # an image model that does not exist: building it would fail, so these tests also show it is never built
    return EncoderSettings(text_model=str(tiny_models.bert), max_length=32, image_model="/no/such/model", device="cpu")


@pytest.fixture(scope="module")
def prepared_mosi(tiny_mosi: MosiSpec, settings: EncoderSettings, tmp_path_factory):
    return prepare(tiny_mosi.root, settings, cache_dir=tmp_path_factory.mktemp("mosi_cache"), progress=False)


def test_prepare_uses_the_given_split_float_targets_and_text_only(prepared_mosi, tiny_mosi: MosiSpec):
    p = prepared_mosi
    assert p.dims == {"text": 32} and p.settings.image_model == "none"
    assert p.train.ids == [i for i, m in tiny_mosi.split.items() if m == "train"]
    assert p.val.ids == [i for i, m in tiny_mosi.split.items() if m == "val"]
    assert p.test.ids == [i for i, m in tiny_mosi.split.items() if m == "test"]
    assert p.split == {"kind": "given", "n_train": len(p.train), "n_val": len(p.val), "n_test": len(p.test)}
    assert p.y_train.dtype == torch.float32 and p.y_train.tolist() == pytest.approx(
        [tiny_mosi.scores[i] for i in p.train.ids]
    )
    assert p.unlabelled.ids == tiny_mosi.unlabelled


def test_training_selects_the_lowest_validation_mae(prepared_mosi):
    model, result = fit(prepared_mosi, "text_only", replace(FAST, epochs=6, patience=10), progress=False)
    maes = [h["val_mae"] for h in result.history]
    assert len(maes) == 6 and len(set(maes)) > 1
    assert result.best_epoch == 1 + maes.index(min(maes))  # lower is better
    assert result.val_metrics["mae"] == min(maes)
    assert {"val_corr", "val_acc7", "val_acc2_has0", "val_f1_has0", "val_acc2_non0", "val_f1_non0"} <= set(
        result.history[0]
    )
    outputs = predict_logits(model, prepared_mosi.val)
    assert outputs.shape == (len(prepared_mosi.val), 1)
    # the restored weights are the selected epoch's: their MAE is the reported one
    mae = (outputs[:, 0] - prepared_mosi.y_val).abs().mean().item()
    assert mae == pytest.approx(result.val_metrics["mae"], abs=1e-5)


def test_a_trained_head_beats_the_mean_predictor(prepared_mosi):
    """The tiny texts carry their score in their words: a trained head must do better than the train mean."""
    _, result = fit(prepared_mosi, "text_only", replace(FAST, epochs=40, patience=40), progress=False)
    y_val = prepared_mosi.y_val
    constant = (y_val - prepared_mosi.y_train.mean()).abs().mean().item()
    assert result.val_metrics["mae"] < 0.8 * constant, (result.val_metrics, constant)
    assert result.val_metrics["corr"] > 0.5


def test_mse_is_selectable_and_class_weights_are_refused(prepared_mosi):
    model, result = fit(prepared_mosi, "native_cat", replace(FAST, epochs=2, loss="mse"), progress=False)
    assert model.config.training["loss"] == "mse" and len(result.history) == 2
    with pytest.raises(ValueError, match="does not fit a regression task"):
        fit(prepared_mosi, "native_cat", replace(FAST, epochs=1, loss="focal"), progress=False)
    with pytest.raises(ValueError, match="class weights need class labels"):
        fit(prepared_mosi, "native_cat", replace(FAST, epochs=1, class_weights="balanced"), progress=False)


@pytest.mark.parametrize("head", available_heads(aliases=False))
def test_every_head_has_one_output_that_trains(head: str):
    """Each registered head built with one output gives ``[B, 1]`` and gets gradients through its own loss."""
    torch.manual_seed(0)
    dims = {"text": 12, "image": 8, "audio": 6}
    gen = torch.Generator().manual_seed(1)

    def batch(dim: int, present: list[bool]) -> ModalityBatch:
        states, pooled = torch.randn(4, 5, dim, generator=gen), torch.randn(4, dim, generator=gen)
        return ModalityBatch(states, torch.ones(4, 5, dtype=torch.bool), pooled, torch.tensor(present))

    kwargs = {"d_model": 16, "hidden": 16} if head in {"ote", "cmac", "hstec", "dual_attention"} else {"hidden": 16}
    model = create_head(head, dims, 1, **kwargs)
    inputs = {
        "text": batch(12, [True, True, False, True]),
        "image": batch(8, [True, False, True, False]),
        "audio": batch(6, [False, True, True, True]),
    }
    out = model(inputs)
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    loss = model.training_loss(inputs, torch.tensor([1.0, -2.0, 0.5, 3.0]), make_loss("l1", task="regression"))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_late_fusion_regression_is_the_mean_of_present_modalities():
    torch.manual_seed(0)
    head = create_head("late", {"text": 6, "image": 4}, 1).eval()
    gen = torch.Generator().manual_seed(2)
    inputs = {
        m: ModalityBatch(torch.zeros(3, 1, d), torch.ones(3, 1, dtype=torch.bool), torch.randn(3, d, generator=gen), p)
        for m, d, p in (("text", 6, torch.tensor([True, True, False])), ("image", 4, torch.tensor([True, False, True])))
    }
    per_modality = head.modality_logits(inputs)[..., 0]  # [B, M]: text, image
    out = head(inputs)[:, 0]
    assert out[0].item() == pytest.approx(per_modality[0].mean().item())  # both present: their mean
    assert out[1].item() == pytest.approx(per_modality[1, 0].item())  # image missing: the text score alone
    assert out[2].item() == pytest.approx(per_modality[2, 1].item())  # text missing: the image score alone


def test_cross_modal_heads_refuse_text_only_data_clearly(prepared_mosi):
    with pytest.raises(ValueError, match="cmac attends across modalities: it needs two or three"):
        fit(prepared_mosi, "cmac", replace(FAST, epochs=1), progress=False)


@pytest.mark.parametrize("finetune", [0, 1])
def test_regression_checkpoint_round_trip(prepared_mosi, tiny_mosi: MosiSpec, settings, tmp_path: Path, finetune):
    prepared = prepared_mosi
    if finetune:
        prepared = prepare(
            tiny_mosi.root, replace(settings, finetune_text_layers=1), cache_dir=tmp_path / "c", progress=False
        )
    model, _ = fit(prepared, "late", replace(FAST, epochs=2), progress=False)
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["task"] == "regression" and config["labels"] == [] and config["image_encoder"] == {}
    loaded = FusentModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(predict_logits(model, prepared.val), predict_logits(loaded, prepared.val))

    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache", device="cpu")
    scores = predictor.predict_samples(prepared.bundle.unlabelled, progress=False)
    expected = predict_logits(model, prepared.unlabelled)[:, 0].tolist()
    assert scores == pytest.approx(expected, abs=1e-5) and all(isinstance(s, float) for s in scores)
    one = predictor.predict(text="good happy day")
    assert list(one[0]) == ["score"] and isinstance(one[0]["score"], float) and len(one) == 1
    with pytest.raises(ValueError, match="regression scores"):
        predictor.predict_proba_samples(prepared.bundle.unlabelled, progress=False)


# ------------------------------------------------------------------------------------------------------ the CLI


pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI changes logging and env


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_cli_train_evaluate_predict_regression(tiny_mosi: MosiSpec, tiny_models: TinyModels, tmp_path: Path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    common = ["--cache-dir", cache, "-q"]
    train = invoke(
        "train", "--data", tiny_mosi.root, "--out", run, "--head", "text_only", "--epochs", "3", "--batch-size", "8",
        "--text-model", tiny_models.bert, "--max-length", "32", "--device", "cpu", *common,
    )  # fmt: skip
    assert train.exit_code == 0, train.output
    for name in ("MAE", "Corr", "Acc-7", "Acc-2 has-0", "Acc-2 non-0"):
        assert name in train.stdout
    assert "bad_score=3" in train.stdout  # the data problems are summarised
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["validation"]["n"] == 12 and metrics["test"]["n"] == 3
    assert "calibration" not in metrics  # no temperature for scores
    assert len(metrics["history"]) == 3 and "val_mae" in metrics["history"][0]
    rows = read_rows(run / "predictions.txt")
    assert rows[0] == ["id", "score"]
    assert [r[0] for r in rows[1:]] == tiny_mosi.unlabelled  # the row without text included
    assert all(len(r) == 2 and float(r[1]) == pytest.approx(float(r[1])) for r in rows[1:])

    evaluated = tmp_path / "eval.json"
    result = invoke("evaluate", run / "checkpoint", "--data", tiny_mosi.root, "--out", evaluated, *common)
    assert result.exit_code == 0, result.output
    assert "Acc-2 non-0" in result.stdout
    # by default the dataset's own test rows, as train scored them once
    assert json.loads(evaluated.read_text()) == pytest.approx(metrics["test"])
    val_split = invoke("evaluate", run / "checkpoint", "--data", tiny_mosi.root, "--split", "val", *common)
    assert val_split.exit_code == 0 and "n=12" in val_split.stdout

    out = tmp_path / "preds.csv"
    result = invoke("predict", run / "checkpoint", "--data", tiny_mosi.root, "--out", out, *common)
    assert result.exit_code == 0, result.output
    assert read_rows(out) == rows  # the same checkpoint and features: the same scores as train wrote


def test_cli_refuses_task_mismatch(tiny_mosi: MosiSpec, tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path: Path):
    model_args = ["--text-model", tiny_models.bert, "--max-length", "32", "--device", "cpu"]
    run = tmp_path / "run"
    train = invoke("train", "--data", tiny_mosi.root, "--out", run, "--head", "text_only", "--epochs", "1",
                   *model_args, "--cache-dir", tmp_path / "c", "-q")  # fmt: skip
    assert train.exit_code == 0, train.output
    wrong = CliRunner().invoke(app, ["predict", str(run / "checkpoint"), "--data", str(tiny_mvsa.root), "-q"])
    assert wrong.exit_code != 0 and "regression model" in wrong.output
    # (compare runs on regression data now: tests/test_compare_review.py::test_regression_compare_on_tiny_mosi)
