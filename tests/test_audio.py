"""Audio: decoding of every bad-file kind, features (shapes, frame counts, MFCC = librosa), encoders (frozen
features, a tiny Hugging Face wav2vec2, the networks trained here), training-only augmentation, the RAVDESS and
audio-folder adapters, and audio end to end through train / checkpoint / predict."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from fusent.data import AudioLoadError, ProblemReport, Sample, load_audio, load_dataset, load_manifest
from fusent.data.ravdess import EMOTIONS, SENTIMENT, STATEMENTS
from fusent.encoders import LSTMCNN, STFTCNN, AudioFeatureEncoder, create_audio_encoder, spectral
from fusent.features import FeatureCache, ModalityBatch, build_features, encode_modality

SR = 16_000
REAL_RAVDESS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess_speech"


def tone(seconds: float, freq: float = 220.0, sr: int = SR, amp: float = 0.3, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    wave = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return wave if channels == 1 else np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


def audio_bytes(wave: np.ndarray, sr: int = SR, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ decoding


def test_clean_file_decodes_to_mono_16k_float(tmp_path: Path):
    path = tmp_path / "a.flac"
    path.write_bytes(audio_bytes(tone(0.5), fmt="FLAC"))
    out = load_audio(path)
    assert out.value.dtype == np.float32 and out.value.shape == (8000,)
    assert out.problems == [] and out.notes == []
    np.testing.assert_allclose(out.value, tone(0.5), atol=1e-4)  # FLAC is lossless up to 16-bit quantisation


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_lossy_formats_decode(fmt: str):
    out = load_audio(audio_bytes(tone(1.0, freq=440), fmt=fmt))
    assert abs(out.value.shape[0] - SR) < SR * 0.1  # mp3 adds encoder padding
    spectrum = np.abs(np.fft.rfft(out.value))
    assert abs(np.argmax(spectrum) * SR / out.value.shape[0] - 440) < 5


def test_stereo_44k_is_mixed_down_and_resampled():
    stereo = tone(1.0, sr=44_100, channels=2)  # channels at 0.5x and 1x the tone: their mean is 0.75x
    out = load_audio(audio_bytes(stereo, sr=44_100))
    assert out.notes == ["audio_downmixed_to_mono", "audio_resampled"]
    assert out.value.shape == (SR,)
    np.testing.assert_allclose(out.value[1000:-1000], 0.75 * tone(1.0)[1000:-1000], atol=2e-3)


def test_odd_rate_in_memory_pair_and_integer_pcm():
    pcm = (tone(0.5, sr=8000) * 32767).astype(np.int16)
    out = load_audio((pcm, 8000))
    assert out.notes == ["audio_resampled"] and out.value.shape == (8000,)
    assert 0.28 < np.abs(out.value).max() < 0.32  # int16 scaled back to [-1, 1]


def test_silent_and_clipped_are_reported_but_used():
    silent = load_audio(audio_bytes(np.zeros(SR, dtype=np.float32)))
    assert [k for k, _ in silent.problems] == ["silent_audio"] and "digital silence" in silent.problems[0][1]
    assert silent.value.shape == (SR,)
    quiet = load_audio(tone(1.0, amp=1e-4))
    assert [k for k, _ in quiet.problems] == ["silent_audio"] and "-80 dBFS" in quiet.problems[0][1]
    clipped = load_audio(audio_bytes(np.clip(tone(1.0, amp=3.0), -1, 1)))
    assert [k for k, _ in clipped.problems] == ["clipped_audio"]
    assert clipped.value.shape == (SR,)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: p.write_bytes(audio_bytes(np.zeros(0, dtype=np.float32))), "empty_audio"),  # a valid 0-frame wav
        (lambda p: p.write_bytes(b""), "corrupt_audio"),
        (lambda p: p.write_bytes(b"RIFF not really " + random.Random(0).randbytes(400)), "corrupt_audio"),
        (lambda p: None, "missing_audio"),
    ],
    ids=["zero_length", "empty_file", "corrupt_bytes", "missing"],
)
def test_unusable_files_raise_a_per_file_error(tmp_path: Path, make, kind: str):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioLoadError) as info:
        load_audio(path)
    assert info.value.kind == kind
    assert str(path) in str(info.value)


def test_bad_audio_is_reported_cached_and_the_sample_keeps_its_text(tmp_path: Path, tiny_text_encoder):
    files = {
        "good": audio_bytes(tone(0.4)),
        "silent": audio_bytes(np.zeros(4000, dtype=np.float32)),
        "clipped": audio_bytes(np.clip(tone(0.4, amp=3.0), -1, 1)),
        "zero": audio_bytes(np.zeros(0, dtype=np.float32)),
        "corrupt": b"garbage" * 50,
        "stereo44k": audio_bytes(tone(0.4, sr=44_100, channels=2), sr=44_100),
    }
    samples = []
    for name, data in files.items():
        (tmp_path / f"{name}.wav").write_bytes(data)
        samples.append(Sample(id=name, text="good day", audio=tmp_path / f"{name}.wav"))
    samples.append(Sample(id="gone", text="good day", audio=tmp_path / "gone.wav"))
    encoders = {"text": tiny_text_encoder, "audio": AudioFeatureEncoder("mfcc")}
    expected = {
        "silent_audio": 1,
        "clipped_audio": 1,
        "empty_audio": 1,
        "corrupt_audio": 1,
        "missing_audio": 1,
    }
    cache = FeatureCache(tmp_path / "cache")
    runs = []
    # the second and third runs read everything from the cache (the third pooled vectors only, as pooled heads
    # do) and must report the same
    for keep_states in (True, True, False):
        report = ProblemReport()
        table = build_features(samples, encoders, cache, report, progress=False, keep_states=keep_states)
        runs.append(table)
        assert dict(report.counts) == expected
        assert dict(report.notes) == {"audio_downmixed_to_mono": 1, "audio_resampled": 1}
    present = dict(zip(runs[0].ids, runs[0].modalities["audio"].present.tolist(), strict=True))
    assert present == {"good": True, "silent": True, "clipped": True, "zero": False, "corrupt": False,
                       "stereo44k": True, "gone": False}  # fmt: skip
    assert runs[0].modalities["text"].present.all()  # every sample keeps its text
    torch.testing.assert_close(runs[0].modalities["audio"].pooled, runs[1].modalities["audio"].pooled)


def test_in_memory_waveforms_hash_by_content(tmp_path: Path):
    cache = FeatureCache(tmp_path / "cache")
    enc = AudioFeatureEncoder("logmel")
    a, b = tone(0.3, freq=200), tone(0.3, freq=300)
    first = encode_modality(
        [Sample(id="a", audio=a), Sample(id="b", audio=b)], enc, cache, ProblemReport(), progress=False
    )
    assert not torch.allclose(first.pooled[0], first.pooled[1])
    files = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(files) == 2
    again = encode_modality([Sample(id="c", audio=b.copy())], enc, cache, ProblemReport(), progress=False)
    torch.testing.assert_close(again.pooled[0], first.pooled[1])
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 2  # same content: a cache hit


# ------------------------------------------------------------------------------------------------ features


@pytest.mark.parametrize(("seconds", "frames"), [(1.0, 101), (2.5, 251), (0.0125, 2)])
def test_frame_counts_and_feature_shapes(seconds: float, frames: int):
    assert spectral.frame_count(int(seconds * SR)) == frames
    for kind, width in (("mfcc", 40), ("logmel", 128), ("stft", 201)):
        enc = AudioFeatureEncoder(kind, max_seconds=None)
        states, pooled = enc.encode([tone(seconds), tone(1.0)])
        assert enc.dim == 2 * width
        assert states[0].shape == (frames, 2 * width) and states[1].shape == (101, 2 * width)
        assert pooled.shape == (2, 2 * width)


def test_max_seconds_crops():
    states, _ = AudioFeatureEncoder("mfcc", max_seconds=1.0).encode([tone(3.0)])
    assert states[0].shape[0] == 101


def test_mfcc_and_log_mel_match_librosa_on_a_tone():
    librosa = pytest.importorskip("librosa")
    wave = tone(1.234, freq=440) + tone(1.234, freq=1234, amp=0.1)
    kw = {"sr": SR, "n_fft": 400, "hop_length": 160, "win_length": 400, "n_mels": 128}
    ref_mfcc = librosa.feature.mfcc(y=wave, n_mfcc=40, **kw).T
    ref_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=wave, **kw), top_db=80.0).T
    power = spectral.stft_power(torch.from_numpy(wave)[None])
    mask = spectral.frame_mask(torch.tensor([len(wave)]), power.shape[1])
    mel = spectral.log_mel(power, mask)
    mfcc = spectral.mfcc(mel)[0].numpy()
    assert mfcc.shape == ref_mfcc.shape == (124, 40)
    np.testing.assert_allclose(mel[0].numpy(), ref_mel, atol=0.02)
    np.testing.assert_allclose(mfcc, ref_mfcc, atol=0.02 * np.abs(ref_mfcc).max() / 100)


def test_normalisation_is_per_utterance_over_real_frames():
    frames = torch.randn(2, 10, 3) * 5 + 7
    mask = torch.arange(10)[None] < torch.tensor([[10], [6]])
    out = spectral.normalise(frames, mask)
    for i, n in enumerate((10, 6)):
        torch.testing.assert_close(out[i, :n].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[i, :n].std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert (out[1, 6:] == 0).all()


# ------------------------------------------------------------------------------------------------ encoders


def test_hf_audio_encoder_by_local_folder(tmp_path: Path):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    Wav2Vec2Model(config).save_pretrained(tmp_path / "w2v")
    Wav2Vec2FeatureExtractor(sampling_rate=SR).save_pretrained(tmp_path / "w2v")
    enc = create_audio_encoder(str(tmp_path / "w2v"), max_seconds=None, device="cpu")
    assert enc.dim == 16 and not enc.trainable
    states, pooled = enc.encode([tone(0.5), tone(1.0)])
    assert [s.shape[1] for s in states] == [16, 16]
    assert states[1].shape[0] > states[0].shape[0] > 0  # frames follow the clip length
    torch.testing.assert_close(pooled[0], states[0].mean(0))
    # long clips go through in pieces whose frames are concatenated
    enc.chunk_seconds = 0.25
    chunked, _ = enc.encode([tone(1.0)])
    assert abs(chunked[0].shape[0] - states[1].shape[0]) <= 4
    assert len(enc.cache_key()) == 20


def test_whisper_uses_its_encoder_and_keeps_the_frames_of_the_clip(tmp_path: Path):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=64,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperModel(config).save_pretrained(tmp_path / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp_path / "whisper")
    enc = create_audio_encoder(str(tmp_path / "whisper"), max_seconds=None, device="cpu")
    assert enc.whisper and type(enc.model).__name__ == "WhisperEncoder"
    states, pooled = enc.encode([tone(0.5), tone(2.5)])
    assert [tuple(s.shape) for s in states] == [(25, 16), (125, 16)]  # 50 frames/s, not the 30 s of padding
    assert pooled.shape == (2, 16)


def test_missing_hf_audio_model_says_what_to_do(tmp_path: Path):
    from fusent.options import OptionError

    with pytest.raises(OptionError, match="built-in encoders `fusent models` lists"):
        create_audio_encoder(str(tmp_path / "nothing-here"))


@pytest.mark.parametrize("cls", [LSTMCNN, STFTCNN])
def test_trained_networks_read_waveform_batches(cls):
    torch.manual_seed(0)
    enc = cls(max_seconds=2.0) if cls is STFTCNN else cls(max_seconds=2.0, filters=16, hidden=8)
    waves, pooled = enc.encode([tone(0.5), tone(3.0), tone(0.01)])
    assert [w.shape for w in waves] == [(8000,), (32000,), (160,)]  # cropped to 2 s
    assert pooled.shape == (3, 1)
    states = nn.utils.rnn.pad_sequence(waves, batch_first=True)
    mask = torch.arange(states.shape[1])[None] < torch.tensor([len(w) for w in waves])[:, None]
    present = torch.tensor([True, True, False])
    out = enc(ModalityBatch(states=states, mask=mask, pooled=pooled, present=present))
    assert out.states.shape[0] == 3 and out.states.shape[2] == enc.out_dim == out.pooled.shape[1]
    assert out.mask[:, 0].all() and out.mask.sum(1)[1] > out.mask.sum(1)[0]
    assert torch.equal(out.present, present)
    out.pooled.sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    assert enc.settings()["name"] == enc.name and enc.cache_key() == "waveform-16000-2.0"


# -------------------------------------------------------------------------------------------- augmentation


def _peak_hz(wave: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy() * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * SR / len(wave))


def test_pitch_shift_time_stretch_and_noise():
    wave = torch.from_numpy(tone(1.0, freq=440))
    assert _peak_hz(spectral.pitch_shift(wave, 2.0)) == pytest.approx(440 * 2 ** (2 / 12), abs=3)
    assert spectral.pitch_shift(wave, 2.0).shape == wave.shape
    stretched = spectral.time_stretch(wave, 1.25)
    assert stretched.shape[0] == pytest.approx(SR / 1.25, abs=2) and _peak_hz(stretched) == pytest.approx(440, abs=3)
    noisy = spectral.add_noise(wave, 20.0, torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(wave.pow(2).mean() / (noisy - wave).pow(2).mean())
    assert float(snr) == pytest.approx(20.0, abs=0.5)


def test_augment_perturbs_present_clips_only():
    enc = LSTMCNN(filters=8, hidden=4)
    waves = [torch.from_numpy(tone(0.5)), torch.from_numpy(tone(0.7)), torch.zeros(0)]
    states = nn.utils.rnn.pad_sequence(waves, batch_first=True)
    mask = torch.arange(states.shape[1])[None] < torch.tensor([8000, 11200, 0])[:, None]
    batch = ModalityBatch(states, mask, torch.zeros(3, 1), torch.tensor([True, False, False]))
    out = enc.augment(batch, torch.Generator().manual_seed(3))
    assert not torch.equal(out.states[0, : out.mask[0].sum()], waves[0][: out.mask[0].sum()])
    torch.testing.assert_close(out.states[1, :11200], waves[1])  # absent row untouched
    assert int(out.mask[1].sum()) == 11200 and int(out.mask[2].sum()) == 0


# ------------------------------------------------------------------------------------------------ RAVDESS


def make_ravdess_folder(root: Path, actors=(1, 2, 17, 19), seconds: float = 0.3) -> dict[str, str]:
    """RAVDESS-named clips: every emotion x both statements for each actor, plus a stray file; id -> emotion.
    Emotions differ in pitch, so a network can tell them apart."""
    emotions = {}
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for code, emotion in EMOTIONS.items():
            for statement in STATEMENTS:
                stem = f"03-01-{code}-01-{statement}-01-{actor:02d}"
                wave = tone(seconds, freq=150 + 40 * int(code), amp=0.2)
                (folder / f"{stem}.flac").write_bytes(audio_bytes(wave, fmt="FLAC"))
                emotions[stem] = emotion
    (root / "Actor_01" / "notes.wav").write_bytes(audio_bytes(tone(0.1)))  # not a RAVDESS name: reported
    return emotions


@pytest.fixture(scope="module")
def tiny_ravdess(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("ravdess") / "ravdess_speech"
    return root, make_ravdess_folder(root)


def test_ravdess_sentiment_from_file_names_split_by_actor(tiny_ravdess):
    root, emotions = tiny_ravdess
    bundle = load_dataset(root)
    assert bundle.labels == ["negative", "neutral", "positive"]
    assert bundle.prediction_header == "id,label"
    kept = {s.id: s for s in bundle.labelled}
    assert set(kept) == {i for i, e in emotions.items() if e != "surprised"}
    assert bundle.report.notes["ravdess_surprised_excluded"] == 8  # 4 actors x 2 statements, counted not silent
    assert bundle.report.counts == {"bad_file_name": 1}
    for sid, sample in kept.items():
        assert sample.label == SENTIMENT[emotions[sid]]
        assert sample.text == STATEMENTS[sid.split("-")[4]]
        actor = int(sid[-2:])
        assert bundle.given_split[sid] == ("train" if actor <= 16 else "val" if actor <= 18 else "test")
        assert sample.group == f"actor{actor:02d}"
        assert sample.audio.exists() and sample.image is None


def test_ravdess_emotion_task_and_labels_pick_the_set(tiny_ravdess):
    root, emotions = tiny_ravdess
    bundle = load_dataset(root, label_set="emotion")
    assert len(bundle.labels) == 8 and len(bundle.labelled) == len(emotions)
    assert {s.id: s.label for s in bundle.labelled} == emotions
    assert len(load_dataset(root, labels=bundle.labels).labelled) == len(emotions)  # a checkpoint's labels decide
    with pytest.raises(ValueError, match="sentiment"):
        load_dataset(root, label_set="valence")


def test_prepare_uses_the_dataset_split(tiny_ravdess, tiny_models, tmp_path: Path):
    from fusent.train_flow import EncoderSettings, prepare

    root, _ = tiny_ravdess
    settings = EncoderSettings(text_model=str(tiny_models.bert), audio_model="mfcc", device="cpu")
    prepared = prepare(root, settings, cache_dir=tmp_path / "cache", progress=False)
    actors = [{int(i[-2:]) for i in part.ids} for part in (prepared.train, prepared.val, prepared.test)]
    assert actors == [{1, 2}, {17}, {19}]  # speaker-disjoint train / validation / test
    assert prepared.split["kind"] == "given"
    assert set(prepared.dims) == {"text", "audio"}  # the image encoder is dropped: no sample has an image
    assert prepared.bundle.report.notes["no_image_in_dataset"] == 1


def test_manifest_audio_column(tmp_path: Path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes(audio_bytes(tone(0.2)))
    (tmp_path / "m.csv").write_text("id,text,audio,label\n1,hello,clips/a.wav,positive\n2,,clips/gone.wav,\n")
    bundle = load_manifest(tmp_path / "m.csv")
    assert bundle.labelled[0].audio == tmp_path / "clips" / "a.wav"
    assert bundle.unlabelled[0].audio is None
    assert bundle.report.counts == {"missing_audio": 1, "empty_text": 1, "no_modality": 1}


# ---------------------------------------------------------------------------------------- end to end


def test_audio_trains_checkpoints_and_predicts_a_folder(tiny_ravdess, tiny_models, tmp_path: Path):
    """lstm-cnn + weighted fusion on the tiny RAVDESS folder; augmentation runs on training batches only; the
    checkpoint predicts a plain folder of audio files (text missing) through the CLI."""
    from typer.testing import CliRunner

    from fusent.cli import app
    from fusent.model import predict_logits
    from fusent.predict import Predictor
    from fusent.train_flow import EncoderSettings, fit, prepare
    from fusent.training import TrainConfig

    root, _ = tiny_ravdess
    settings = EncoderSettings(text_model=str(tiny_models.bert), audio_model="lstm-cnn", device="cpu")
    prepared = prepare(root, settings, cache_dir=tmp_path / "cache", progress=False)
    assert prepared.dims["audio"] == 256
    augmented: list[int] = []
    original = LSTMCNN.augment

    def spy(self, batch, generator):
        augmented.append(int(batch.present.shape[0]))
        return original(self, batch, generator)

    LSTMCNN.augment = spy
    try:
        config = TrainConfig(epochs=2, batch_size=16, augment=True, patience=5)
        model, result = fit(prepared, "weighted", config, progress=False)
        assert sum(augmented) == 2 * len(prepared.train)  # every training row, every epoch; never validation
        augmented.clear()
        predict_logits(model, prepared.val)
        assert augmented == []
    finally:
        LSTMCNN.augment = original
    assert set(model.head.report()["modality_weights"]) == {"text", "audio"}
    model.save_pretrained(tmp_path / "ckpt")
    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache")
    assert predictor.model.config.audio_encoder["name"] == "lstm-cnn"
    torch.testing.assert_close(predict_logits(predictor.model, prepared.val), predict_logits(model, prepared.val))
    top = predictor.predict(text="Kids are talking by the door", audio=tone(0.3))
    assert {r["label"] for r in top} == set(prepared.bundle.labels)

    folder = tmp_path / "to_predict"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.wav").write_bytes(audio_bytes(tone(0.4)))
    (folder / "sub" / "two.flac").write_bytes(audio_bytes(tone(0.4, sr=44_100, channels=2), sr=44_100, fmt="FLAC"))
    (folder / "broken.mp3").write_bytes(b"nope")
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(tmp_path / "ckpt"),
            "--data",
            str(folder),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c2"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["id", "label"]
    assert sorted(r[0] for r in rows[1:]) == ["broken", "one", "sub/two"]  # the broken file is still predicted
    assert all(r[1] in prepared.bundle.labels for r in rows[1:])


def test_cli_trains_and_evaluates_ravdess_emotion(tiny_ravdess, tiny_models, tmp_path: Path):
    import json

    from typer.testing import CliRunner

    from fusent.cli import app

    root, emotions = tiny_ravdess
    run = tmp_path / "run"
    common = ["--cache-dir", str(tmp_path / "cache"), "-q"]
    args = ["train", "--data", str(root), "--audio-model", "mfcc", "--label-set", "emotion", "--head", "native_cat"]
    args += ["--text-model", str(tiny_models.bert), "--epochs", "2", "--out", str(run), "--device", "cpu", *common]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert len(config["labels"]) == 8 and set(config["dims"]) == {"text", "audio"}
    assert config["audio_encoder"] == {"name": "mfcc", "max_seconds": 10.0}
    assert config["training"]["split"]["kind"] == "given" and config["training"]["split"]["label_set"] == "emotion"
    metrics = json.loads((run / "metrics.json").read_text())
    n_val = sum(1 for sid in emotions if int(sid[-2:]) in (17, 18))
    n_test = sum(1 for sid in emotions if int(sid[-2:]) >= 19)
    assert sum(map(sum, metrics["validation"]["confusion_matrix"])) == n_val  # actors 17-18 only
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == n_test  # actors 19-20 only
    result = CliRunner().invoke(app, ["evaluate", str(run / "checkpoint"), "--data", str(root), *common])
    assert result.exit_code == 0, result.output
    assert f"(test, n={n_test})" in result.output
    assert metrics["test"]["f1_macro"] == pytest.approx(
        float(result.output.split("macro P/R/F1 ")[1].split()[2]), abs=1e-4
    )


def test_cli_train_help_lists_audio_options():
    from typer.testing import CliRunner

    from fusent.cli import app

    text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    for option in ("--audio-model", "--audio-seconds", "--label-set", "lstm-cnn", "stft-cnn"):
        assert option in text


# --------------------------------------------------------------------------------------------- real data


@pytest.fixture
def real_ravdess() -> Path:
    if not (REAL_RAVDESS / "Actor_01").exists():
        pytest.skip(f"RAVDESS speech not found at {REAL_RAVDESS}")
    return REAL_RAVDESS


def test_real_ravdess_adapter_and_decoding(real_ravdess: Path):
    bundle = load_dataset(real_ravdess)
    assert len(bundle.labelled) == 1040 and bundle.report.notes["ravdess_surprised_excluded"] == 160
    assert set(bundle.given_split.values()) == {"train", "val", "test"}
    actors = {p: {int(i[-2:]) for i, part in bundle.given_split.items() if part == p} for p in ("val", "test")}
    assert actors == {"val": {17, 18}, "test": {19, 20}}
    emotion = load_dataset(real_ravdess, label_set="emotion")
    assert len(emotion.labelled) == 1200 and not emotion.report.counts
    for sample in emotion.labelled[::150]:
        out = load_audio(sample.audio)
        assert out.value.ndim == 1 and 2.0 < out.value.shape[0] / SR < 7.0 and not out.notes
