"""Sample records and the problem report every stage of a run writes to."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("fusent")

#: Modalities fusent knows, in the fixed order heads concatenate them.
MODALITIES: tuple[str, ...] = ("text", "image", "audio")


@dataclass
class Sample:
    """One post. ``text`` is already decoded; ``image`` and ``audio`` are paths (or bytes / a PIL image / a
    waveform when given in memory) that may turn out unreadable. ``split`` is the dataset's own assignment
    (``train`` / ``val`` / ``test``) where it has one (speakers kept apart, a published split); None lets fusent
    split."""

    id: str
    text: str | None = None
    image: Path | bytes | Any | None = None
    audio: Path | bytes | Any | None = None
    label: str | None = None
    split: str | None = None


@dataclass
class ProblemReport:
    """Collects per-sample problems so nothing is dropped silently; each is logged once, then counted."""

    counts: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)  # informational, e.g. texts decoded by fallback

    def add(self, kind: str, sample_id: str, message: str) -> None:
        text = f"[{kind}] sample {sample_id}: {message}"
        self.counts[kind] += 1
        self.messages.append(text)
        log.warning(text)

    def note(self, kind: str) -> None:
        self.notes[kind] += 1

    def summary(self) -> str:
        parts = ", ".join(f"{kind}={n}" for kind, n in sorted(self.counts.items())) or "none"
        notes = "".join(f"; {kind}={n}" for kind, n in sorted(self.notes.items()))
        return f"data problems: {parts}{notes}"


@dataclass
class DatasetBundle:
    """What an adapter returns: labelled samples, samples to predict, the label set and the problems."""

    labelled: list[Sample]
    unlabelled: list[Sample]
    labels: list[str]
    report: ProblemReport
    name: str = ""
    prediction_header: str = "guid,tag"  # header row of the predictions file, in the dataset's own format
