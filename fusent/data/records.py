"""Sample records and the problem report every stage of a run writes to."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("fusent")

#: Modalities fusent knows, in the fixed order heads concatenate them.
MODALITIES: tuple[str, ...] = ("text", "image", "audio")

TaskName = Literal["classification", "regression"]


@dataclass
class Sample:
    """One post. ``text`` is already decoded; ``image`` and ``audio`` are paths (or bytes / a PIL image / a
    waveform when given in memory) that may turn out unreadable. A classification target is ``label``; a
    regression target is ``score``. ``group`` (a speaker, a video) keeps related samples on one side of a split.
    ``video`` (a clip's path or bytes) fills the image side with its frames and the audio side with its soundtrack
    where those are empty (``data/video.py``, at encoding time); ``transcript`` is what ``--asr`` heard."""

    id: str
    text: str | None = None
    image: Path | bytes | Any | None = None
    audio: Path | bytes | Any | None = None
    label: str | None = None
    score: float | None = None
    group: str | None = None  # a speaker or a video: splits keep a group on one side
    video: Path | bytes | None = None
    transcript: str | None = None


@dataclass
class ProblemReport:
    """Collects per-sample problems so nothing is dropped silently; each is logged once, then counted."""

    counts: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)  # informational, e.g. texts decoded by fallback
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, sample id, message) of each problem

    def add(self, kind: str, sample_id: str, message: str) -> None:
        text = f"[{kind}] sample {sample_id}: {message}"
        self.counts[kind] += 1
        self.messages.append(text)
        self.entries.append((kind, sample_id, message))
        log.warning(text)

    def note(self, kind: str) -> None:
        self.notes[kind] += 1

    def summary(self) -> str:
        parts = ", ".join(f"{kind}={n}" for kind, n in sorted(self.counts.items())) or "none"
        notes = "".join(f"; {kind}={n}" for kind, n in sorted(self.notes.items()))
        return f"data problems: {parts}{notes}"


@dataclass
class DatasetBundle:
    """What an adapter returns: labelled samples, samples to predict, the label set and the problems.

    ``labels`` is empty for a regression dataset. ``given_split`` maps each labelled id to "train", "val" or "test"
    when the dataset fixes its own split (then no random split is drawn); None otherwise.
    """

    labelled: list[Sample]
    unlabelled: list[Sample]
    labels: list[str]
    report: ProblemReport
    name: str = ""
    prediction_header: str = "guid,tag"  # header row of the predictions file, in the dataset's own format
    task: TaskName = "classification"
    given_split: dict[str, str] | None = None

    def modalities(self) -> list[str]:
        """The modalities at least one sample has (e.g. only text for a transcript table), in ``MODALITIES`` order."""
        samples = self.labelled + self.unlabelled
        clips = any(s.video is not None for s in samples)  # a clip gives frames and a soundtrack
        return [m for m in MODALITIES if (clips and m != "text") or any(getattr(s, m) is not None for s in samples)]
