"""Train on the tiny MVSA folder, save, reload: identical logits, safetensors weights, a usable Predictor;
seeded runs repeat; the fine-tuning mode saves and reloads too."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import COLOURS, MvsaSpec, TinyModels
from PIL import Image
from safetensors import safe_open

from fusent.model import CONFIG_NAME, WEIGHTS_NAME, FusentModel, predict_logits
from fusent.predict import Predictor
from fusent.train_flow import EncoderSettings, fit, prepare
from fusent.training import TrainConfig

TWO_EPOCHS = TrainConfig(epochs=2, batch_size=8, seed=3)


def test_prepare_splits_and_encodes(prepared_tiny, tiny_mvsa: MvsaSpec):
    p = prepared_tiny
    n = len(tiny_mvsa.labels)
    assert len(p.train) + len(p.val) + len(p.test) == n
    assert len(p.val) == p.split["n_val"] == 4 and len(p.test) == p.split["n_test"] == 4  # 10% each, rounded up
    assert set(p.train.ids).isdisjoint(p.val.ids) and set(p.test.ids).isdisjoint(p.train.ids + p.val.ids)
    assert p.unlabelled.ids == tiny_mvsa.unlabelled
    assert p.dims == {"text": 32, "image": 32}
    assert p.y_train.shape == (len(p.train),) and p.y_train.dtype == torch.long
    assert sorted(p.y_train.unique().tolist()) == [0, 1, 2]
    labels = p.bundle.labels
    assert [labels[i] for i in p.y_val.tolist()] == [tiny_mvsa.labels[i] for i in p.val.ids]
    # broken images found while encoding are in the same report as the adapter's problems
    assert p.bundle.report.counts["corrupt_image"] == 2 and p.bundle.report.counts["truncated_image"] == 2
    assert p.text_encoder is None  # frozen text: cached, not part of the model


def _fit_save_reload(prepared, head: str, directory: Path) -> tuple[FusentModel, FusentModel]:
    model, result = fit(prepared, head, TWO_EPOCHS, {"hidden": 32, "d_model": 32} if head == "ote" else None, False)
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    assert 0.0 <= result.val_metrics["f1_macro"] <= 1.0 and result.val_metrics["n"] == len(prepared.val)
    model.save_pretrained(directory)
    return model, FusentModel.from_pretrained(directory)


@pytest.mark.parametrize("head", ["native_cat", "ote", "weighted_dynamic", "two_view"])
def test_save_reload_identical_logits(prepared_tiny, tmp_path: Path, head: str):
    model, loaded = _fit_save_reload(prepared_tiny, head, tmp_path / "ckpt")
    assert not loaded.training
    before = predict_logits(model, prepared_tiny.val)
    after = predict_logits(loaded, prepared_tiny.val)
    assert before.shape == (len(prepared_tiny.val), 3)
    assert torch.equal(before, after)
    assert torch.equal(
        predict_logits(model, prepared_tiny.unlabelled), predict_logits(loaded, prepared_tiny.unlabelled)
    )
    # the checkpoint is the same tensors, and a fresh model of the same config is not (so the check is real)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    torch.manual_seed(123)
    fresh = FusentModel(loaded.config).eval()
    assert not torch.allclose(predict_logits(fresh, prepared_tiny.val), after)


def test_checkpoint_files(prepared_tiny, tmp_path: Path, tiny_models: TinyModels):
    model, _ = _fit_save_reload(prepared_tiny, "native_cat", tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / WEIGHTS_NAME
    raw = weights.read_bytes()
    # safetensors layout: u64 little-endian header length, then a JSON header; not a zip/pickle
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert not raw.startswith((b"PK", b"\x80"))
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    with safe_open(str(weights), framework="pt") as fh:
        assert set(fh.keys()) == set(model.state_dict())
        for key in fh.keys():
            assert torch.equal(fh.get_tensor(key), model.state_dict()[key])
    config = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert config["labels"] == ["negative", "neutral", "positive"]
    assert config["head"] == "native_cat"
    assert config["dims"] == {"text": 32, "image": 32}
    assert config["text_encoder"] == {
        "name": str(tiny_models.bert),
        "pooling": "mean",
        "max_length": 32,
        "finetune_layers": 0,
    }
    assert config["image_encoder"] == {"name": str(tiny_models.vit)}
    assert config["training"]["epochs"] == 2 and config["training"]["split"]["seed"] == 13


def test_from_pretrained_rejects_non_checkpoint(tmp_path: Path):
    from fusent.options import OptionError

    with pytest.raises(OptionError, match="not a fusent checkpoint"):
        FusentModel.from_pretrained(tmp_path)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "config.json").write_text("{}")
    with pytest.raises(OptionError, match="is a run folder, not a checkpoint: pass .*checkpoint"):
        FusentModel.from_pretrained(tmp_path)


def _check_scores(result: list[dict]) -> None:
    assert [r["label"] for r in result] and sorted(r["label"] for r in result) == ["negative", "neutral", "positive"]
    scores = [r["score"] for r in result]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_predictor(prepared_tiny, tmp_path: Path):
    model, _ = _fit_save_reload(prepared_tiny, "native_cat", tmp_path / "ckpt")
    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache", device="cpu")
    picture = Image.new("RGB", (50, 40), COLOURS["positive"])
    both = predictor.predict(text="good day", image=picture)
    _check_scores(both)
    _check_scores(predictor.predict(text="good day", image=None))
    _check_scores(predictor.predict(text=None, image=picture))
    # the modalities really are used: dropping one changes the scores
    assert predictor.predict(text="good day", image=None) != both
    assert predictor.predict(text=None, image=picture) != both
    # the Predictor's encoders reproduce the training features: same probabilities as the trained model
    samples = prepared_tiny.bundle.unlabelled
    proba = predictor.predict_proba_samples(samples, progress=False)
    expected = torch.softmax(predict_logits(model, prepared_tiny.unlabelled), -1).numpy()
    assert proba.shape == (len(samples), 3)
    assert abs(proba - expected).max() < 1e-5
    assert len(predictor.predict_samples(samples)) == len(samples)


def test_same_seed_same_result(prepared_tiny):
    config = TrainConfig(epochs=3, batch_size=8, seed=11)
    model_a, a = fit(prepared_tiny, "native_cat", config, progress=False)
    model_b, b = fit(prepared_tiny, "native_cat", config, progress=False)
    assert a.val_metrics == b.val_metrics
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert all(torch.equal(v, model_b.state_dict()[k]) for k, v in model_a.state_dict().items())
    _, c = fit(prepared_tiny, "native_cat", replace(config, seed=12), progress=False)
    assert [h["train_loss"] for h in c.history] != [h["train_loss"] for h in a.history]


@pytest.fixture(scope="module")
def prepared_finetune(tiny_mvsa: MvsaSpec, tiny_settings: EncoderSettings, tmp_path_factory):
    settings = replace(tiny_settings, finetune_text_layers=1)
    return prepare(tiny_mvsa.root, settings, cache_dir=tmp_path_factory.mktemp("ft_cache"), progress=False)


def test_finetune_train_save_reload(prepared_finetune, tiny_models: TinyModels, tmp_path: Path):
    p = prepared_finetune
    assert p.text_encoder is not None and set(p.train.modalities) == {"image"}  # text is encoded in the model
    from transformers import AutoModel

    pristine = AutoModel.from_pretrained(str(tiny_models.bert)).state_dict()
    model, result = fit(p, "native_cat", TWO_EPOCHS, progress=False)
    assert len(result.history) == 2
    tuned = model.text_encoder.model.state_dict()
    # the last layer trained, the frozen ones did not
    assert not torch.equal(
        tuned["encoder.layer.1.output.dense.weight"], pristine["encoder.layer.1.output.dense.weight"]
    )
    assert torch.equal(tuned["encoder.layer.0.output.dense.weight"], pristine["encoder.layer.0.output.dense.weight"])
    assert torch.equal(tuned["embeddings.word_embeddings.weight"], pristine["embeddings.word_embeddings.weight"])

    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert config["text_encoder"]["finetune_layers"] == 1
    with safe_open(str(tmp_path / "ckpt" / WEIGHTS_NAME), framework="pt") as fh:
        assert "text_encoder.model.encoder.layer.1.output.dense.weight" in fh.keys()
    loaded = FusentModel.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.text_encoder is not None
    assert torch.equal(predict_logits(model, p.val), predict_logits(loaded, p.val))

    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache", device="cpu")
    assert predictor.encoders["text"] is None
    _check_scores(predictor.predict(text="good day", image=Image.new("RGB", (40, 40), COLOURS["negative"])))
    _check_scores(predictor.predict(text="good day"))


def test_finetune_same_seed_same_result(prepared_finetune, tiny_models: TinyModels):
    from transformers import AutoModel

    pristine = AutoModel.from_pretrained(str(tiny_models.bert)).state_dict()
    _, a = fit(prepared_finetune, "native_cat", TWO_EPOCHS, progress=False)
    _, b = fit(prepared_finetune, "native_cat", TWO_EPOCHS, progress=False)
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    shared = prepared_finetune.text_encoder.model.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in pristine.items())  # fitting left Prepared untouched


def test_finetune_batches_sorted_by_token_count(prepared_finetune, tiny_models: TinyModels):
    from fusent.model import padded_lengths

    p = prepared_finetune
    model, _ = fit(p, "native_cat", replace(TWO_EPOCHS, epochs=1), progress=False)
    counts = model.text_encoder.token_counts(p.train.texts)
    assert torch.equal(padded_lengths(model, p.train), p.train.sequence_lengths() + counts)
    assert len(set(counts.tolist())) > 1  # the fixture's texts differ in length, so sorting matters
    # predictions made in token-count order land on their own samples
    logits = predict_logits(model, p.val)
    with torch.no_grad():
        for i in range(len(p.val)):
            alone = model(p.val.batch(torch.tensor([i])), [p.val.texts[i]])
            assert torch.allclose(alone[0], logits[i], atol=1e-5), i


# ------------------------------------------------------------------------------------- text-only manifest data


@pytest.fixture(scope="module")
def text_manifest(tmp_path_factory) -> Path:
    """A CSV manifest without images: 8 labelled rows per class, in alternating class order, then 8 to predict."""
    import csv

    from conftest import WORDS

    root = tmp_path_factory.mktemp("text_manifest")
    rows = []
    for k in range(8):
        for label in ("negative", "neutral", "positive"):
            words = WORDS[label]
            rows.append({"id": f"{label[:3]}{k}", "text": f"{words[k % 6]} {words[(k + 1) % 6]}", "label": label})
    rows += [{"id": f"u{k}", "text": "good day" if k % 2 else "bad day", "label": ""} for k in range(8)]
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.mark.parametrize("head", ["native_cat", "ote", "text_only"])
def test_text_only_data(text_manifest: Path, tiny_settings: EncoderSettings, tmp_path: Path, head: str):
    settings = replace(tiny_settings, image_model="none")
    prepared = prepare(text_manifest, settings, cache_dir=tmp_path / "cache", progress=False)
    assert prepared.dims == {"text": 32}
    assert prepared.bundle.labels == ["negative", "neutral", "positive"]
    assert len(prepared.train) + len(prepared.val) + len(prepared.test) == 24
    assert prepared.unlabelled.ids == [f"u{k}" for k in range(8)]
    kwargs = {"d_model": 32} if head == "ote" else None
    model, _ = fit(prepared, head, TWO_EPOCHS, kwargs, progress=False)
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())
    assert config["image_encoder"] == {} and config["dims"] == {"text": 32}
    loaded = FusentModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(predict_logits(model, prepared.val), predict_logits(loaded, prepared.val))
    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache", device="cpu")
    assert set(predictor.encoders) == {"text"}
    _check_scores(predictor.predict(text="good day"))


def test_image_head_on_text_only_data_fails_clearly(text_manifest: Path, tiny_settings: EncoderSettings, tmp_path):
    prepared = prepare(
        text_manifest, replace(tiny_settings, image_model="none"), cache_dir=tmp_path / "cache", progress=False
    )
    with pytest.raises(ValueError, match="image"):
        fit(prepared, "image_only", TWO_EPOCHS, progress=False)


def test_prepare_limit_keeps_first_labelled_and_unlabelled(text_manifest: Path, tiny_settings, tmp_path: Path):
    settings = replace(tiny_settings, image_model="none")
    prepared = prepare(
        text_manifest, settings, val_fraction=0.5, limit=6, cache_dir=tmp_path / "c", progress=False, test_fraction=0
    )
    first_six = ["neg0", "neu0", "pos0", "neg1", "neu1", "pos1"]
    assert sorted(prepared.train.ids + prepared.val.ids) == sorted(first_six) and not prepared.has_test
    assert prepared.unlabelled.ids == [f"u{k}" for k in range(6)]
    with pytest.raises(ValueError, match="only 4 labelled"):
        prepare(text_manifest, settings, limit=4, cache_dir=tmp_path / "c", progress=False)


# ------------------------------------------------------------------------------ on a CUDA machine (skipped on CPU)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_frozen_encoders_train_and_predict(tiny_mvsa: MvsaSpec, tiny_settings: EncoderSettings, tmp_path: Path):
    settings = replace(tiny_settings, device="cuda")
    prepared = prepare(tiny_mvsa.root, settings, cache_dir=tmp_path / "cache", progress=False)
    model, result = fit(prepared, "ote", TWO_EPOCHS, {"d_model": 32}, progress=False)
    assert len(result.history) == 2
    model.save_pretrained(tmp_path / "ckpt")
    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache", device="cuda")
    _check_scores(predictor.predict(text="good day", image=Image.new("RGB", (40, 40), COLOURS["positive"])))


@needs_cuda
def test_cuda_finetune_trains(tiny_mvsa: MvsaSpec, tiny_settings: EncoderSettings, tmp_path: Path):
    settings = replace(tiny_settings, device=None, finetune_text_layers=1)  # default device: cuda here
    prepared = prepare(tiny_mvsa.root, settings, cache_dir=tmp_path / "cache", progress=False)
    assert prepared.text_encoder.device.type == "cuda"
    _, result = fit(prepared, "native_cat", TWO_EPOCHS, progress=False)
    assert len(result.history) == 2
