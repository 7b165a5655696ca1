"""Robustness curves: level 0 is what ``fusent evaluate`` scores, a modality removed from every post is exactly a
dataset without it, noise at level 0 changes nothing and at higher levels changes the inputs, seeded; CSV and plot
are written, one line per checkpoint when several are given; a text-only checkpoint has no image curve."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MvsaSpec, TinyModels, invoke
from PIL import Image

from fusent import robustness as rb
from fusent.data import ProblemReport, load_dataset
from fusent.features import build_features
from fusent.model import predict_logits
from fusent.predict import Predictor

pytestmark = pytest.mark.usefixtures("restore_process_state")  # the CLI changes logging and env


def _model_args(models: TinyModels, cache: Path, image: object) -> list[object]:
    return ["--text-model", models.bert, "--image-model", image, "--max-length", "32", "--cache-dir", cache,
            "--device", "cpu", "-q"]  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def runs(tiny_mvsa: MvsaSpec, tiny_models: TinyModels, tmp_path_factory) -> dict[str, Path]:
    """Two ``fusent train`` runs on the same split: text + image (the default head), and text only."""
    root = tmp_path_factory.mktemp("robustness")
    common = ["--data", tiny_mvsa.root, "--epochs", "2", "--batch-size", "8"]
    out = {"cache": root / "cache"}
    handlers = logging.getLogger().handlers[:]  # the CLI logs to its runner's stream, closed after each call
    try:
        for name, image in (("both", tiny_models.vit), ("text", "none")):
            result = invoke("train", *common, "--out", root / name, *_model_args(tiny_models, out["cache"], image))
            assert result.exit_code == 0, result.output
            out[name] = root / name
    finally:
        logging.getLogger().handlers[:] = handlers
    return out


def _evaluate(checkpoint: Path, data: Path, cache: Path, tmp_path: Path) -> dict:
    path = tmp_path / f"eval-{data.name}.json"
    result = invoke("evaluate", checkpoint, "--data", data, "--cache-dir", cache, "--out", path, "-q")
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())


def test_level_zero_is_evaluate_and_full_removal_is_data_without_images(runs, tiny_mvsa: MvsaSpec, tmp_path: Path):
    out = tmp_path / "curves"
    result = invoke(
        "robustness", runs["both"], "--data", tiny_mvsa.root, "--cache-dir", runs["cache"], "--levels", "0,0.5,1",
        "--out", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out / "robustness.csv")
    assert list(rows[0]) == ["model", "kind", "modality", "level", "severity", "accuracy", "f1_macro", "n", "seconds"]
    assert {(r["kind"], r["modality"]) for r in rows} == {(k, m) for k in rb.KINDS for m in ("text", "image")}
    assert len(rows) == 12 and {r["model"] for r in rows} == {"both"}  # the run folder names the line
    assert (out / "robustness.png").stat().st_size > 5000
    assert "missing" in result.stdout and "wrote:" in result.stdout

    clean = _evaluate(runs["both"] / "checkpoint", tiny_mvsa.root, runs["cache"], tmp_path)
    for row in (r for r in rows if float(r["level"]) == 0):
        assert int(row["n"]) == clean["n"] == 4
        assert float(row["accuracy"]) == pytest.approx(clean["accuracy"], abs=1e-6)
        assert float(row["f1_macro"]) == pytest.approx(clean["f1_macro"], abs=1e-6)

    no_images = tmp_path / "no_images"  # the same folder with every image file gone
    shutil.copytree(tiny_mvsa.root, no_images, ignore=shutil.ignore_patterns("*.jpg"))
    without = _evaluate(runs["both"] / "checkpoint", no_images, runs["cache"], tmp_path)
    full = next(r for r in rows if (r["kind"], r["modality"], float(r["level"])) == ("missing", "image", 1.0))
    assert float(full["accuracy"]) == pytest.approx(without["accuracy"], abs=1e-6)
    assert float(full["f1_macro"]) == pytest.approx(without["f1_macro"], abs=1e-6)

    # the same at the level of logits, on the whole labelled set (more posts than the 4 of the test part)
    predictor = Predictor.from_pretrained(runs["both"] / "checkpoint", runs["cache"])
    samples = load_dataset(tiny_mvsa.root).labelled
    table = predictor.features(samples, progress=False)
    removed = rb.remove_modality(table, "image", range(len(samples)))
    expected = predictor.outputs([replace(s, image=None) for s in samples], progress=False)
    torch.testing.assert_close(predict_logits(predictor.model, removed), expected, rtol=0, atol=0)
    assert not torch.equal(predict_logits(predictor.model, table), expected)  # removal changed something


def test_several_checkpoints_share_the_axes_and_text_only_has_no_image_curve(runs, tiny_mvsa: MvsaSpec, tmp_path):
    out = tmp_path / "both"
    result = invoke(
        "robustness", runs["both"] / "checkpoint", runs["text"], "--data", tiny_mvsa.root, "--cache-dir",
        runs["cache"], "--levels", "0,1", "--kinds", "missing", "--out", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out / "robustness.csv")
    assert {r["model"] for r in rows} == {"both", "text"}
    assert {r["modality"] for r in rows if r["model"] == "text"} == {"text"}  # no image curve
    assert {r["modality"] for r in rows if r["model"] == "both"} == {"text", "image"}
    assert {r["kind"] for r in rows} == {"missing"}
    assert (out / "robustness.png").stat().st_size > 5000


def test_bad_options_say_what_to_do(runs, tiny_mvsa: MvsaSpec, tiny_mosi):
    for option, value in (("--levels", "0,2"), ("--levels", "zero"), ("--kinds", "blur"), ("--split", "train")):
        result = invoke("robustness", runs["both"], "--data", tiny_mvsa.root, option, value, "-q")
        assert result.exit_code != 0 and option in result.output
    for command in ("robustness", "evaluate"):  # the checks shared with evaluate (fusent/checkpoint_data.py)
        result = invoke(command, runs["both"] / "checkpoint", "--data", tiny_mosi.root, "-q")
        assert result.exit_code != 0 and "regression dataset but the checkpoint is a classification" in result.output


def test_remove_modality_builds_what_the_cache_builds_for_a_post_without_it(tiny_mvsa: MvsaSpec, tiny_image_encoder):
    samples = load_dataset(tiny_mvsa.root).labelled[:8]
    encoders = {"image": tiny_image_encoder}
    table = build_features(samples, encoders, None, ProblemReport(), progress=False, keep_states=True)
    drop = [0, 3, 5]
    removed = rb.remove_modality(table, "image", drop)
    gone = [replace(s, image=None) if i in drop else s for i, s in enumerate(samples)]
    expected = build_features(gone, encoders, None, ProblemReport(), progress=False, keep_states=True).modalities
    got = removed.modalities["image"]
    for name in ("present", "lengths"):
        torch.testing.assert_close(getattr(got, name), getattr(expected["image"], name), rtol=0, atol=0)
    # the same features, up to float noise of images encoded in other batches
    torch.testing.assert_close(got.pooled, expected["image"].pooled, rtol=0, atol=1e-6)
    assert [s.shape for s in got.states] == [s.shape for s in expected["image"].states]
    assert table.modalities["image"].present[drop].all() and not got.present[drop].any()  # the original untouched


def test_noise_at_level_zero_is_identity_and_above_it_changes_inputs_seeded(runs, tiny_mvsa: MvsaSpec):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    wave = np.sin(np.arange(16_000) / 8).astype(np.float32)
    assert rb.corrupt_image(image, 0.0, rng) is image
    assert rb.drop_words("good day today", 0.0, rng) == "good day today"
    assert rb.add_noise(wave, 0.0, rng) is wave

    noisy = np.asarray(rb.corrupt_image(image, 1.0, np.random.default_rng(1)), dtype=float)
    again = np.asarray(rb.corrupt_image(image, 1.0, np.random.default_rng(1)), dtype=float)
    assert noisy.shape[0] == rb.IMAGE_SIDE and np.array_equal(noisy, again)
    mild = np.asarray(rb.corrupt_image(image, 0.25, np.random.default_rng(1)), dtype=float)
    assert np.abs(noisy - noisy.mean()).mean() != np.abs(mild - mild.mean()).mean()
    words = " ".join(["w"] * 1000)
    assert 400 < len(rb.drop_words(words, 0.5, np.random.default_rng(2)).split()) < 600
    assert rb.drop_words("good day", 1.0, np.random.default_rng(2)) is None  # no word left: no text
    for level in (0.25, 0.5, 1.0):
        noise = rb.add_noise(wave, level, np.random.default_rng(3)) - wave
        measured = 10 * np.log10(np.mean(wave.astype(float) ** 2) / np.mean(noise.astype(float) ** 2))
        assert measured == pytest.approx(rb.snr_db(level), abs=0.2)

    # end to end: level 0 re-encoded without the cache gives the cached logits (up to float rounding: the cache was
    # filled from other batches); level 0.75 changes the features of nearly every post, the same way twice
    predictor = Predictor.from_pretrained(runs["both"] / "checkpoint", runs["cache"])
    samples = load_dataset(tiny_mvsa.root).labelled
    table = predictor.features(samples, progress=False)
    clean = predict_logits(predictor.model, table)
    for modality in ("text", "image"):
        same = rb.noisy_table(predictor, samples, table, modality, 0.0)
        torch.testing.assert_close(predict_logits(predictor.model, same), clean, rtol=0, atol=1e-5)
        blurred = rb.noisy_table(predictor, samples, table, modality, 0.75, seed=1)
        present = table.modalities[modality].present
        changed = (blurred.modalities[modality].pooled - table.modalities[modality].pooled).abs().sum(1) > 1e-4
        assert changed[present].float().mean() > 0.9  # nearly every post that has the modality changed
        assert torch.equal(blurred.modalities[modality].present, present) or modality == "text"
        repeat = rb.noisy_table(predictor, samples, table, modality, 0.75, seed=1)
        assert torch.equal(repeat.modalities[modality].pooled, blurred.modalities[modality].pooled)  # seeded


def test_audio_noise_on_a_speech_checkpoint(tiny_models: TinyModels, tmp_path: Path):
    from test_audio import make_ravdess_folder

    from fusent.train_flow import EncoderSettings, fit, prepare
    from fusent.training import TrainConfig

    root = tmp_path / "ravdess_speech"
    make_ravdess_folder(root)
    settings = EncoderSettings(text_model=str(tiny_models.bert), audio_model="mfcc", device="cpu")
    prepared = prepare(root, settings, cache_dir=tmp_path / "cache", progress=False, keep_states=False)
    model, _ = fit(prepared, "native_cat", TrainConfig(epochs=1, batch_size=16), progress=False)
    model.save_pretrained(tmp_path / "ckpt")
    predictor = Predictor.from_pretrained(tmp_path / "ckpt", tmp_path / "cache")
    samples = prepared.parts.test
    rows = rb.robustness(predictor, samples, prepared.bundle.labels, levels=[0, 1], progress=False)
    assert {(r["kind"], r["modality"]) for r in rows} == {(k, m) for k in rb.KINDS for m in ("text", "audio")}
    assert (
        next(r["severity"] for r in rows if (r["kind"], r["modality"], r["level"]) == ("noise", "audio", 1))
        == "SNR -10 dB"
    )
    table = predictor.features(samples, progress=False)
    noisy = rb.noisy_table(predictor, samples, table, "audio", 1.0)
    changed = (noisy.modalities["audio"].pooled - table.modalities["audio"].pooled).abs().sum(1) > 1e-3
    assert bool(changed.all()) and bool(noisy.modalities["audio"].present.all())
