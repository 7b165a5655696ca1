"""Prediction files: one row per sample in the dataset's own columns (``guid,tag`` for MVSA, ``id,label`` for a
manifest, ``id,score``-style for regression), optionally a probability column per class, as CSV or JSON lines.

One formatter for every writer (``fusent predict``, the predictions a run writes, a streaming writer that appends
chunk by chunk): ``header_text`` once, then ``rows_text`` per chunk, so a file written in pieces equals one written
at once. Torch-free.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .options import OutputFormat, choice

#: Decimals written: scores as the MVSA / MOSI tools read them; probabilities finer, so they still sum to ~1.
SCORE_DECIMALS, PROBA_DECIMALS = 4, 6


class PredictionFormat:
    """How prediction rows are written: ``header`` names the id and answer columns (``"guid,tag"``); with
    ``proba_labels`` each row also gets ``p_<label>`` (the calibrated probability of that class)."""

    def __init__(
        self,
        header: str = "guid,tag",
        fmt: OutputFormat | str = "csv",
        proba_labels: Sequence[str] | None = None,
        transcripts: bool = False,
    ):
        self.columns = [c.strip() for c in header.split(",")]
        if len(self.columns) != 2:
            raise ValueError(f"a prediction header names an id and an answer column, got {header!r}")
        self.fmt = choice(OutputFormat, fmt, "format")
        self.proba_labels = list(proba_labels or [])
        self.transcripts = transcripts  # a last column with each post's transcript (--asr)
        self.columns += [f"p_{label}" for label in self.proba_labels] + (["transcript"] if transcripts else [])

    def header_text(self) -> str:
        """The CSV header line (nothing for JSON lines, whose rows name their fields)."""
        return self._csv([self.columns]) if self.fmt == OutputFormat.CSV else ""

    def rows_text(
        self,
        ids: Sequence[str],
        values: Sequence[str | float],
        proba: Sequence[Sequence[float]] | None = None,
        transcripts: Sequence[str | None] | None = None,
    ) -> str:
        """Rows for ``ids`` with their label (or score) and, when the format has them, their class probabilities
        (``proba[i]`` in the order of ``proba_labels``)."""
        if self.proba_labels and proba is None:
            raise ValueError("this prediction format has probability columns: pass proba")
        as_csv = self.fmt == OutputFormat.CSV
        rows: list[list[Any]] = []
        for i, (sid, value) in enumerate(zip(ids, values, strict=True)):
            if isinstance(value, float):  # a regression score: fixed decimals in CSV, a number in JSON
                value = f"{value:.{SCORE_DECIMALS}f}" if as_csv else round(value, SCORE_DECIMALS)
            row: list[Any] = [sid, value]
            if self.proba_labels:
                row += [round(float(p), PROBA_DECIMALS) for p in proba[i]]  # type: ignore[index]
            if self.transcripts:
                row.append((transcripts[i] if transcripts is not None else None) or "")
            rows.append(row)
        if as_csv:
            return self._csv(rows)
        return "".join(json.dumps(dict(zip(self.columns, row, strict=True))) + "\n" for row in rows)

    @staticmethod
    def _csv(rows: list[list[Any]]) -> str:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        return text.getvalue()


def write_prediction_file(
    path: str | Path | None,
    ids: Sequence[str],
    values: Sequence[str | float],
    header: str = "guid,tag",
    *,
    fmt: OutputFormat | str = "csv",
    proba: Sequence[Sequence[float]] | None = None,
    proba_labels: Sequence[str] | None = None,
    transcripts: Sequence[str | None] | None = None,
) -> None:
    """Every row at once to ``path`` (written atomically: a crash leaves the old file or none), or to stdout when
    ``path`` is None or ``-``; ``transcripts`` (``--asr``) adds a last column."""
    form = PredictionFormat(header, fmt, proba_labels if proba is not None else None, transcripts is not None)
    text = form.header_text() + form.rows_text(ids, values, proba, transcripts)
    if path is None or str(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from .atomic import atomic_write

    atomic_write(path, text)
