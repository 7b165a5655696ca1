"""Ensembles (``fusent ensemble``): the mean of the members' calibrated probabilities, loaded like any checkpoint by
the Predictor, the CLI and the REST service; members' shared encoders built and run once; one-line errors for
checkpoints that cannot be combined. Also test-time augmentation (mirrored images) in the Predictor."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COLOURS, MvsaSpec, invoke, jpeg_bytes
from PIL import Image

from fusent.ensemble import EnsembleError, EnsemblePredictor, build_ensemble, is_ensemble
from fusent.model import CONFIG_NAME, FusentModel
from fusent.predict import Predictor
from fusent.runs import train_run
from fusent.train_flow import prepare
from fusent.training import TrainConfig

PICTURE = jpeg_bytes(COLOURS["positive"], (40, 36), seed=5)
QUICK = TrainConfig(epochs=2, batch_size=8)


@pytest.fixture(scope="module")
def runs(prepared_tiny, tmp_path_factory) -> dict[str, Path]:
    """Three calibrated runs on one split (two seeds of one head, another head) and one on another split."""
    root = tmp_path_factory.mktemp("ensemble_runs")
    out = {}
    for name, head, seed in (("a", "native_cat", 0), ("b", "native_cat", 1), ("c", "native_combine", 2)):
        train_run(prepared_tiny, head, replace(QUICK, seed=seed), {}, root / name, progress=False, plots=False)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def other_split_run(tiny_mvsa: MvsaSpec, tiny_settings, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other_split")
    prepared = prepare(tiny_mvsa.root, tiny_settings, split_seed=99, cache_dir=root / "cache", progress=False)
    train_run(prepared, "native_cat", QUICK, {}, root / "run", progress=False, plots=False)
    return root / "run"


@pytest.fixture(scope="module")
def ensemble_dir(runs: dict[str, Path], tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "ens"
    # a run folder and a checkpoint folder are both accepted
    build_ensemble([runs["a"], runs["b"] / "checkpoint", runs["c"]], out)
    return out


def test_ensemble_folder_is_self_contained(ensemble_dir: Path, runs: dict[str, Path]):
    config = json.loads((ensemble_dir / CONFIG_NAME).read_text())
    assert config["ensemble"] == ["members/0", "members/1", "members/2"]
    assert config["shared_split"] and config["temperature"] == 1.0
    assert [m["head"] for m in config["members"]] == ["native_cat", "native_cat", "native_combine"]
    assert [m["seed"] for m in config["members"]] == [0, 1, 2]
    for k, name in enumerate("abc"):
        member = ensemble_dir / "members" / str(k)
        assert not member.is_symlink() and (member / "model.safetensors").is_file()
        assert (member / "model.safetensors").read_bytes() == (
            runs[name] / "checkpoint" / "model.safetensors"
        ).read_bytes()
    assert (ensemble_dir / "split.csv").read_bytes() == (runs["a"] / "split.csv").read_bytes()
    assert is_ensemble(ensemble_dir) and not is_ensemble(runs["a"] / "checkpoint")
    with pytest.raises(ValueError, match="ensemble"):
        FusentModel.from_pretrained(ensemble_dir)


def test_probabilities_are_the_mean_of_calibrated_members(ensemble_dir: Path, runs: dict[str, Path], prepared_tiny):
    ens = Predictor.from_pretrained(ensemble_dir, use_cache=False, device="cpu")
    assert isinstance(ens, EnsemblePredictor) and len(ens.members) == 3
    members = [Predictor.from_pretrained(runs[n] / "checkpoint", use_cache=False, device="cpu") for n in "abc"]
    temperatures = [m.model.config.temperature for m in members]
    assert any(t != 1.0 for t in temperatures)  # calibrated: the temperatures matter
    samples = prepared_tiny.bundle.unlabelled
    expected = np.mean([m.predict_proba_samples(samples, progress=False) for m in members], axis=0)
    got = ens.predict_proba_samples(samples, progress=False)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # the plain (uncalibrated) mean is not what it computes
    raw = np.mean([torch.softmax(m.outputs(samples, progress=False), -1).numpy() for m in members], axis=0)
    assert np.abs(raw - got).max() > 1e-4
    assert ens.predict_samples(samples, progress=False) == [ens.labels[i] for i in expected.argmax(1)]

    one = ens.predict(text="good happy day", image=PICTURE)
    singles = [m.predict(text="good happy day", image=PICTURE) for m in members]
    mean = {r["label"]: np.mean([dict((s["label"], s["score"]) for s in p)[r["label"]] for p in singles]) for r in one}
    assert [r["score"] for r in one] == pytest.approx([mean[r["label"]] for r in one], abs=1e-6)
    assert sum(r["score"] for r in one) == pytest.approx(1.0, abs=1e-6)
    for m in ("text", "image"):
        assert one.contributions[m] == pytest.approx(np.mean([p.contributions[m] for p in singles]), abs=1e-5)
    assert one.contribution_method == "masking" and one.to_dict()["label"] == one.label
    assert set(ens.predict(text="good").contributions) == {"text"}


def test_members_share_encoders_and_encode_once(ensemble_dir: Path, monkeypatch):
    ens = Predictor.from_pretrained(ensemble_dir, use_cache=False, device="cpu")
    image = {id(p.encoders["image"]) for p in ens.members}
    text = {id(p.encoders["text"]) for p in ens.members}
    assert len(image) == 1 and len(text) == 1  # one encoder object, built once
    encoder = ens.members[0].encoders["image"]
    calls = []
    original = type(encoder).encode
    monkeypatch.setattr(type(encoder), "encode", lambda self, items: calls.append(len(items)) or original(self, items))
    ens.predict_batch([{"text": "good", "image": PICTURE}, {"image": PICTURE}])
    assert calls == [2]  # not once per member


def test_cli_ensemble_evaluate_predict(
    runs: dict[str, Path], tiny_mvsa: MvsaSpec, tmp_path: Path, restore_process_state
):
    from fusent.data import load_dataset, split_labelled

    out, cache = tmp_path / "ens", tmp_path / "cache"
    build_ensemble([runs["a"], runs["b"]], tmp_path / "expected")  # what the CLI must score, computed first
    expected = Predictor.from_pretrained(tmp_path / "expected", cache_dir=cache, device="cpu")
    test = split_labelled(load_dataset(tiny_mvsa.root), split_file=runs["a"] / "split.csv").test
    labels = expected.predict_samples(test, progress=False)
    accuracy = np.mean([p == s.label for p, s in zip(labels, test, strict=True)])

    result = invoke("ensemble", runs["a"], runs["b"], "--out", out)
    assert result.exit_code == 0, result.output
    assert "share one split" in result.output and out.is_dir()
    evaluated = invoke(
        "evaluate", out, "--data", tiny_mvsa.root, "--cache-dir", cache, "-q", "--out", tmp_path / "m.json"
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "ensemble of 2 (native_cat, native_cat)" in evaluated.output and f"(test, n={len(test)})" in evaluated.output
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == pytest.approx(accuracy)
    preds = tmp_path / "preds.txt"
    predicted = invoke("predict", out, "--data", tiny_mvsa.root, "--cache-dir", cache, "-q", "--tta", "--out", preds)
    assert predicted.exit_code == 0, predicted.output
    assert len(preds.read_text().strip().splitlines()) == len(tiny_mvsa.unlabelled) + 1

    again = invoke("ensemble", runs["a"], runs["c"], "--out", out)
    assert again.exit_code == 2 and "exists" in again.output and "--force" in again.output
    assert invoke("ensemble", runs["a"], runs["c"], "--out", out, "--force").exit_code == 0
    assert json.loads((out / CONFIG_NAME).read_text())["members"][1]["head"] == "native_combine"


def test_members_on_other_splits_are_not_scored_on_test(
    runs: dict[str, Path], other_split_run: Path, tiny_mvsa: MvsaSpec, tmp_path: Path, restore_process_state
):
    out = tmp_path / "ens"
    result = invoke("ensemble", runs["a"], other_split_run, "--out", out)
    assert result.exit_code == 0 and "different splits" in result.output
    assert not (out / "split.csv").exists()
    for part in ("test", "val"):
        refused = invoke(
            "evaluate", out, "--data", tiny_mvsa.root, "--split", part, "--cache-dir", tmp_path / "c", "-q"
        )
        assert refused.exit_code != 0 and "trained on different splits" in " ".join(
            refused.output.replace("│", " ").split()
        )
    everything = invoke(
        "evaluate", out, "--data", tiny_mvsa.root, "--split", "all", "--cache-dir", tmp_path / "c", "-q"
    )
    assert everything.exit_code == 0, everything.output


def test_checkpoints_that_cannot_be_combined(runs: dict[str, Path], ensemble_dir: Path, tmp_path: Path):
    with pytest.raises(EnsembleError, match="at least two"):
        build_ensemble([runs["a"]], tmp_path / "x")
    with pytest.raises(EnsembleError, match="neither a checkpoint folder"):
        build_ensemble([runs["a"], tmp_path / "nothing"], tmp_path / "x")
    with pytest.raises(EnsembleError, match="same checkpoint"):
        build_ensemble([runs["a"], runs["a"] / "checkpoint"], tmp_path / "x")
    with pytest.raises(EnsembleError, match="is an ensemble itself"):
        build_ensemble([runs["a"], ensemble_dir], tmp_path / "x")
    with pytest.raises(EnsembleError, match="would hold or replace the member"):
        build_ensemble([runs["a"], runs["b"]], runs["a"].parent, force=True)
    relabelled = tmp_path / "relabelled"
    shutil.copytree(runs["b"] / "checkpoint", relabelled)
    config = json.loads((relabelled / CONFIG_NAME).read_text())
    (relabelled / CONFIG_NAME).write_text(json.dumps({**config, "labels": ["neg", "neu", "pos"]}))
    with pytest.raises(EnsembleError, match="label list"):
        build_ensemble([runs["a"], relabelled], tmp_path / "x")
    (relabelled / CONFIG_NAME).write_text(json.dumps({**config, "task": "regression", "labels": []}))
    with pytest.raises(EnsembleError, match="regression model"):
        build_ensemble([runs["a"], relabelled], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_serve_an_ensemble(ensemble_dir: Path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fusent.serve import create_app

    ens = Predictor.from_pretrained(ensemble_dir, use_cache=False, device="cpu")
    with TestClient(create_app(ens)) as client:
        answer = client.post("/predict", data={"text": "good happy day"}, files={"image": ("p.jpg", PICTURE)})
        assert answer.status_code == 200, answer.text
        expected = ens.predict(text="good happy day", image=PICTURE)
        assert answer.json()["label"] == expected.label
        assert answer.json()["score"] == pytest.approx(expected.score, abs=1e-6)
        meta = client.get("/metadata").json()
        assert meta["fusion_head"].startswith("ensemble of 3") and meta["modalities"] == ["text", "image"]


# ------------------------------------------------------------------------------------------ test-time augmentation


def test_tta_averages_logits_with_the_mirrored_image(runs: dict[str, Path]):
    ckpt = runs["a"] / "checkpoint"
    plain = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu")
    tta = Predictor.from_pretrained(ckpt, use_cache=False, device="cpu", tta=True)
    assert tta.runtime["tta"] and not plain.runtime["tta"]
    rng = np.random.RandomState(0)
    image = Image.fromarray(rng.randint(0, 255, (36, 40, 3)).astype(np.uint8))
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    post = [tta.sample({"text": "good day", "image": image})]
    expected = (
        plain.outputs(post, progress=False)
        + plain.outputs([tta.sample({"text": "good day", "image": mirrored})], progress=False)
    ) / 2
    torch.testing.assert_close(tta.outputs(post, progress=False), expected)
    assert not torch.allclose(tta.outputs(post, progress=False), plain.outputs(post, progress=False))
    # a mirror-symmetric picture answers as without augmentation; a text-only post too
    flat = Image.new("RGB", (40, 36), COLOURS["negative"])
    assert tta.predict(text="bad", image=flat).score == pytest.approx(plain.predict(text="bad", image=flat).score)
    assert tta.predict(text="bad").score == pytest.approx(plain.predict(text="bad").score)
    mean = torch.softmax(expected / plain.model.config.temperature, -1)[0]
    answer = tta.predict(text="good day", image=image)
    assert dict((r["label"], r["score"]) for r in answer) == pytest.approx(
        dict(zip(tta.labels, mean.tolist(), strict=True))
    )


def test_train_seeds_saves_the_ensemble_of_its_seeds(
    tiny_mvsa: MvsaSpec, tiny_models, tmp_path: Path, restore_process_state
):
    """``train --seeds 0,1``: one run per seed, the ensemble as the checkpoint, its test metrics those of the mean of
    the members' calibrated probabilities (recomputed here from the members through the Predictor)."""
    from test_cli import model_args

    from fusent.data import load_dataset, split_labelled

    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ("--data", tiny_mvsa.root, "--epochs", "2", "--batch-size", "8", *model_args(tiny_models, cache))
    result = invoke("train", "--out", run, "--seeds", "0,1", "--head", "native_cat", *args)
    assert result.exit_code == 0, result.output
    assert "seed 0: validation f1_macro" in result.output and "ensemble of 2 native_cat" in result.output
    assert is_ensemble(run / "checkpoint") and (run / "seed-1" / "checkpoint" / CONFIG_NAME).is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ensemble_of_seeds"] == [0, 1] and set(metrics["members"]) == {"0", "1"}

    test = split_labelled(load_dataset(tiny_mvsa.root), split_file=run / "split.csv").test
    members = [Predictor.from_pretrained(run / f"seed-{s}" / "checkpoint", cache_dir=cache) for s in (0, 1)]
    probs = np.mean([m.predict_proba_samples(test, progress=False) for m in members], axis=0)
    labels = members[0].labels
    accuracy = np.mean([labels[int(k)] == s.label for k, s in zip(probs.argmax(1), test, strict=True)])
    assert metrics["test"]["accuracy"] == pytest.approx(accuracy)
    assert Predictor.from_pretrained(run / "checkpoint", cache_dir=cache).predict_proba_samples(
        test, progress=False
    ) == pytest.approx(probs, abs=1e-5)

    for bad, message in (("3", "at least two"), ("0,0", "at least two"), ("a,b", "integers")):
        refused = invoke("train", "--out", tmp_path / "bad", "--seeds", bad, *args)
        assert refused.exit_code == 2 and message in refused.output
    refused = invoke("train", "--out", tmp_path / "bad", "--seeds", "0,1", "--cv", "3", *args)
    assert refused.exit_code == 2 and "--seeds" in refused.output


def test_preset_best_fills_what_is_not_given(tiny_mvsa: MvsaSpec, tiny_models, tmp_path: Path, restore_process_state):
    """``--preset best``: its pooling, class weights and seed ensemble apply; options given on the command line
    (here the text model, --epochs and --seeds) win over the preset's."""
    from test_cli import model_args

    run = tmp_path / "run"
    args = ("--data", tiny_mvsa.root, "--batch-size", "8", *model_args(tiny_models, tmp_path / "cache"))
    result = invoke("train", "--out", run, "--preset", "best", "--epochs", "2", "--seeds", "3,4", *args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["head"] == "native_combine" and metrics["ensemble_of_seeds"] == [3, 4]
    member = json.loads((run / "seed-3" / "checkpoint" / CONFIG_NAME).read_text())
    assert member["text_encoder"]["name"] == str(tiny_models.bert) and member["text_encoder"]["pooling"] == "last4"
    assert member["training"]["class_weights"] == "sqrt" and member["training"]["epochs"] == 2
    bad = invoke("train", "--out", run, "--preset", "fastest", *args)
    assert bad.exit_code == 2 and "best" in bad.output
    one = invoke("train", "--out", tmp_path / "one", "--preset", "best", "--seed", "5", "--epochs", "1", *args)
    assert one.exit_code == 0, one.output
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["history"][0]["epoch"] == 1
    assert not (tmp_path / "one" / "seed-5").exists()  # --seed given: one model, no ensemble
    both = invoke("train", "--out", run, "--seed", "5", "--seeds", "1,2", *args)
    assert both.exit_code == 2 and "not both" in both.output
