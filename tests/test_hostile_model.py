"""The bad-input corpus against models and the Predictor: a batch lacking a trained-here encoder's modality, silent
and clipped audio, hostile images; and interrupted writes of the cache and run folders."""

from __future__ import annotations

import json
from pathlib import Path

import badinputs as bad
import numpy as np
import pytest
import torch
from conftest import COLOURS, TinyModels, jpeg_bytes
from test_predict import make_checkpoint

from fusent.data import ProblemReport, Sample
from fusent.encoders import LSTMCNN, InceptionSAEncoder
from fusent.features import FeatureCache, build_features
from fusent.model import FusentModel, ModelConfig, predict_logits, trainable_encoders
from fusent.predict import InputError, Predictor

LABELS = ["negative", "neutral", "positive"]
PICTURE = jpeg_bytes(COLOURS["positive"], (40, 36), seed=5)


def make_trainable_checkpoint(root: Path, tiny: TinyModels, head: str, image=False, audio=False) -> Path:
    """Text + a from-scratch encoder (inception-sa for images, lstm-cnn for audio), tiny and randomly initialised,
    saved like `fusent train` saves one."""
    encoders: dict[str, dict] = {}
    if image:
        encoders["image"] = InceptionSAEncoder(size=16, channels=4).settings()
    if audio:
        encoders["audio"] = LSTMCNN(max_seconds=1.0, filters=8, kernel=3, hidden=8, blocks=1).settings()
    torch.manual_seed(0)
    dims = {"text": 32, **{m: 1 for m in encoders}}
    config = ModelConfig(
        labels=LABELS,
        head=head,
        dims=dims,
        text_encoder={"name": str(tiny.bert), "pooling": "mean", "max_length": 32, "finetune_layers": 0},
        image_encoder=encoders.get("image", {}),
        audio_encoder=encoders.get("audio", {}),
    )
    built = trainable_encoders(config, "cpu")
    config.dims.update({m: enc.out_dim for m, enc in built.items()})
    model = FusentModel(config, None, trainable_encoders(config, "cpu"))
    with torch.no_grad():
        for p in model.head.parameters():
            if not p.any():
                p.add_(0.1 * torch.randn_like(p))
    return model.save_pretrained(root / f"{head}-{'-'.join(encoders)}")


def audio_predictor(root: Path, tiny: TinyModels) -> Predictor:
    return Predictor.from_pretrained(make_trainable_checkpoint(root, tiny, "weighted", audio=True), use_cache=False)


def make_regression_checkpoint(root: Path, tiny: TinyModels) -> Path:
    """A text-only regression model (one output, the score), randomly initialised."""
    torch.manual_seed(0)
    text = {"name": str(tiny.bert), "pooling": "mean", "max_length": 32, "finetune_layers": 0}
    config = ModelConfig(labels=[], task="regression", head="native_cat", dims={"text": 32}, text_encoder=text)
    return FusentModel(config).save_pretrained(root / "regression")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile_ckpts")


# --------------------------------------------------------------------- item 1: a batch lacking the modality


@pytest.mark.parametrize("head", ["weighted", "cmac"])
def test_lstm_cnn_model_without_audio(ckpts: Path, tiny_models: TinyModels, head: str):
    p = Predictor.from_pretrained(make_trainable_checkpoint(ckpts, tiny_models, head, audio=True), use_cache=False)
    p.warm_up()  # `fusent serve` does this at start-up: it used to crash on a text + audio model
    alone = p.predict(text="good happy")
    assert set(alone.contributions) == {"text"}
    mixed = p.predict_batch([{"text": "good happy"}, {"text": "bad", "audio": bad.tone(0.5)}])
    assert [r["score"] for r in mixed[0]] == pytest.approx([r["score"] for r in alone], abs=1e-5)
    assert set(mixed[1].contributions) == {"text", "audio"}


@pytest.mark.parametrize("head", ["native_combine", "self_attention"])
def test_inception_sa_model_without_images(ckpts: Path, tiny_models: TinyModels, head: str):
    p = Predictor.from_pretrained(make_trainable_checkpoint(ckpts, tiny_models, head, image=True), use_cache=False)
    alone = p.predict(text="good happy")  # was a 500 in the service
    mixed = p.predict_batch([{"text": "good happy"}, {"text": "bad", "image": PICTURE}])
    assert [r["score"] for r in mixed[0]] == pytest.approx([r["score"] for r in alone], abs=1e-5)
    assert p.predict(image=PICTURE).label in LABELS


def test_predict_step_of_training_on_rows_without_the_modality(ckpts: Path, tiny_models: TinyModels, tmp_path: Path):
    """`fusent train` predicts the unlabelled rows at its end; a batch of them without audio crashed it."""
    p = audio_predictor(ckpts, tiny_models)
    samples = [Sample(id=str(i), text="good day") for i in range(5)]
    table = build_features(samples, p.encoders, FeatureCache(tmp_path), ProblemReport(), progress=False)
    logits = predict_logits(p.model, table)
    assert logits.shape == (5, 3) and torch.isfinite(logits).all()
    augmented = p.model.augment(table.batch(torch.arange(5)), torch.Generator().manual_seed(0))
    assert not augmented["audio"].present.any()


# --------------------------------------------------------------------- item 6: one validation for CLI and API


def test_silent_and_clipped_audio_are_predicted_with_a_warning(ckpts: Path, tiny_models: TinyModels):
    p = audio_predictor(ckpts, tiny_models)
    for audio, kind in ((bad.silent_wav(), "silent_audio"), (bad.clipped_wav(), "clipped_audio")):
        result = p.predict(text="good", audio=audio)  # the CLI trains on and predicts these; so must the API
        assert set(result.contributions) == {"text", "audio"}
        assert [w["kind"] for w in result.warnings] == [kind]
        assert result.to_dict()["warnings"] == result.warnings
    with pytest.raises(InputError, match="not a readable audio file") as info:
        p.predict(text="good", audio=b"RIFF....WAVE")
    assert info.value.kind == "corrupt_audio" and info.value.field == "audio"
    assert "<bytes>" not in str(info.value) and "object at 0x" not in str(info.value)


def test_hostile_images_are_input_errors(ckpts: Path, tiny_models: TinyModels):
    p = Predictor.from_pretrained(make_checkpoint(ckpts, tiny_models), use_cache=False, device="cpu")
    for image in (bad.tall_png(), bad.very_tall_png(), np.zeros((1, 9000, 3), dtype=np.uint8)):
        with pytest.raises(InputError, match="aspect ratio") as info:
            p.predict(text="good", image=image)
        assert info.value.kind == "elongated_image" and info.value.field == "image"


# ---------------------------------------------------------------------------------- item 9: atomic writes


def test_an_interrupted_cache_write_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from fusent.data.loading import LoadError

    cache = FeatureCache(tmp_path)
    cache.put_error("k", "ab" * 10, LoadError("corrupt_image", "bad"))
    err = cache._path("k", "ab" * 10, ".err")
    err.write_text('{"kind": "corrupt_im')  # what a crash mid-write of the old code left
    assert cache.get("k", "ab" * 10) is None  # unreadable: encode again, not a JSONDecodeError

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("fusent.atomic.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.put_error("k", "cd" * 10, LoadError("corrupt_image", "bad"))
    with pytest.raises(KeyboardInterrupt):
        cache.put("k", "ef" * 10, torch.zeros(2, 3), torch.zeros(3))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [err.name]  # no partial or temp files


def test_atomic_write_keeps_the_old_file_until_the_new_one_is_whole(tmp_path: Path, monkeypatch):
    from fusent.atomic import atomic_write

    target = tmp_path / "metrics.json"
    atomic_write(target, json.dumps({"run": 1}))

    def failing_writer(fh):
        fh.write(b'{"run": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing_writer)
    assert json.loads(target.read_text()) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_checkpoint_save_is_atomic(ckpts: Path, tiny_models: TinyModels, tmp_path: Path, monkeypatch):
    ckpt = make_checkpoint(ckpts, tiny_models, "native_cat", ("text",))
    model = FusentModel.from_pretrained(ckpt, device="cpu")
    model.save_pretrained(tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()}
    monkeypatch.setattr("fusent.atomic.os.replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path / "ckpt")
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").iterdir()} == before
