"""Streaming batch scoring: a CSV / JSONL / Parquet manifest read row by row, predicted ``batch_size`` posts at a
time, each batch written (and flushed) before the next is read, so memory stays flat however long the manifest is;
``resume`` skips the ids an interrupted run already wrote.

Memory grows only with the ids seen (8 bytes each, for duplicate checks and resuming: 80 MB for ten million rows),
and problem messages are logged for the first few rows of each kind, then only counted.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .data.adapters import check_row, iter_manifest_records, manifest_sample
from .data.records import ProblemReport, Sample

if TYPE_CHECKING:
    from .predict import Predictor

log = logging.getLogger("fusent")

#: Posts predicted, written and flushed together. Encoders still run 32 (texts 8, images 4) at a time inside.
DEFAULT_BATCH_SIZE = 256
#: Header of the predictions file, the same as the non-streaming path writes for a manifest.
HEADER = ("id", "label")  # a manifest's own columns, so predictions read back in


class SeenIds:
    """A set of ids held as 8-byte hashes (a sorted numpy array plus a small set of recent ones): duplicate checks
    and resuming over millions of rows without a Python string per id. Two different ids share a hash with
    probability about n^2 / 2^65 (3e-6 for ten million ids)."""

    #: Recent hashes kept in a Python set before they are merged into the sorted array: small, so the set's own
    #: overhead (~100 bytes an entry) stays under a megabyte; a merge is one O(n) copy (10 ms at ten million ids).
    MERGE_AT = 8192

    def __init__(self, ids: Iterable[str] = ()):
        self._sorted = np.unique(np.fromiter((self._key(i) for i in ids), dtype=np.int64))
        self._recent: set[int] = set()

    @staticmethod
    def _key(sample_id: str) -> int:
        digest = hashlib.blake2b(sample_id.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "little", signed=True)  # int64: numpy compares Python ints exactly

    def __contains__(self, sample_id: object) -> bool:
        return self._has(self._key(str(sample_id)))

    def _has(self, key: int) -> bool:
        if key in self._recent:
            return True
        i = self._sorted.searchsorted(key)
        return i < len(self._sorted) and self._sorted[i] == key

    def add(self, sample_id: str) -> None:
        key = self._key(sample_id)
        if self._has(key):
            return
        self._recent.add(key)
        if len(self._recent) >= self.MERGE_AT:
            recent = np.sort(np.fromiter(self._recent, dtype=np.int64, count=len(self._recent)))
            self._sorted = np.insert(self._sorted, self._sorted.searchsorted(recent), recent)
            self._recent.clear()

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)


class ManifestError(ValueError):
    """A manifest or an option that cannot be scored (wrong task, no id column, --resume without --out, no
    pyarrow for Parquet); raised before anything is predicted or written."""


class StreamReport(ProblemReport):
    """A ProblemReport that logs and keeps the first ``shown`` messages of each kind and counts the rest: a
    manifest with a million empty texts must not keep a million messages nor print them."""

    def __init__(self, shown: int = 5):
        super().__init__()
        self.shown = shown

    def add(self, kind: str, sample_id: str, message: str) -> None:
        if self.counts[kind] < self.shown:
            super().add(kind, sample_id, message)
            return
        self.counts[kind] += 1
        if self.counts[kind] == self.shown + 1:
            log.warning("[%s] more rows with this problem: counted in the summary, not shown", kind)


@dataclass
class ManifestBatch:
    """Samples to predict, and how many manifest rows were read to collect them (for the progress bar)."""

    samples: list[Sample]
    rows: int


def manifest_batches(
    path: str | Path,
    labels: list[str],
    report: ProblemReport,
    batch_size: int = DEFAULT_BATCH_SIZE,
    all_rows: bool = False,
    skip: SeenIds | None = None,
    allow_outside: bool = False,
) -> Iterator[ManifestBatch]:
    """The rows of a manifest to predict (unlabelled ones, or every kept row with ``all_rows``), at most
    ``batch_size`` at a time, read lazily. Rows are checked like ``load_manifest`` checks them (ids, labels), except
    that an id is kept once across both sections. Ids in ``skip`` (already predicted) are passed over silently."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    path = Path(path)
    seen = SeenIds()
    samples: list[Sample] = []
    rows = 0
    for row, record in enumerate(iter_manifest_records(path, report), 1):
        rows += 1
        parsed = manifest_sample(record, row, path.parent, report, str(path), allow_outside)
        if parsed is None:
            continue
        sample, is_labelled = parsed
        if is_labelled and not all_rows:
            continue
        if skip is not None and sample.id in skip:
            continue
        if check_row(sample, is_labelled, labels, report, seen):
            samples.append(sample)
        if len(samples) == batch_size:
            yield ManifestBatch(samples, rows)
            samples, rows = [], 0
    if samples or rows:
        yield ManifestBatch(samples, rows)


def count_rows(path: str | Path) -> int | None:
    """About how many rows a manifest has, for the progress bar's ETA: Parquet's own count; for CSV and JSONL the
    lines (a quoted newline inside a CSV cell counts one too many). Reading 1 GB of lines takes about a second."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            return None
        return pq.ParquetFile(path).metadata.num_rows
    lines, last = 0, b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without its newline
    return max(0, lines - (path.suffix.lower() == ".csv"))


def written_ids(out: Path) -> SeenIds:
    """The ids of a predictions file an interrupted run wrote. A last line cut short by the interruption is removed
    from the file (that id is predicted again)."""
    with out.open("rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            fh.truncate(keep)
            data = data[:keep]
    reader = csv.reader(data.decode("utf-8").splitlines())
    next(reader, None)  # header
    return SeenIds(row[0] for row in reader if row)


def predict_manifest(
    predictor: Predictor,
    path: str | Path,
    out: str | Path | None = None,
    *,
    all_rows: bool = False,
    resume: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    report: ProblemReport | None = None,
    allow_outside: bool = False,
) -> int:
    """Predict the manifest at ``path`` batch by batch, writing ``id,label`` rows to ``out`` (stdout when None or
    '-') and flushing after each batch; returns the number of rows written. ``allow_outside`` lets rows name media
    files outside the manifest's folder. ``resume`` appends to ``out`` and skips
    the ids it already holds, so each id is written once however often the run is interrupted."""
    if predictor.task.name != "classification":
        raise ManifestError(f"{path} is a classification manifest but the checkpoint is a {predictor.task.name} model")
    report = report if report is not None else StreamReport()
    to_stdout = out is None or str(out) == "-"
    if resume and to_stdout:
        raise ManifestError("resume needs an output file (--out): the ids already written are read back from it")
    out = None if to_stdout else Path(out)  # type: ignore[arg-type]
    append = resume and out is not None and out.exists() and out.stat().st_size > 0
    skip = written_ids(out) if append else None  # type: ignore[arg-type]
    batches = manifest_batches(path, predictor.labels, report, batch_size, all_rows, skip, allow_outside)
    try:  # the first batch is read before the output is opened: a bad manifest leaves no half-written file
        first = next(batches, None)
    except (ValueError, ImportError) as exc:
        raise ManifestError(str(exc)) from None
    fh: IO[str]
    if out is None:
        fh = sys.stdout
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        fh = open(out, "a" if append else "w", newline="", encoding="utf-8")
    writer = csv.writer(fh, lineterminator="\n")
    written = 0
    bar = tqdm(total=count_rows(path), desc="predicting", unit="row", disable=not progress, file=sys.stderr)
    try:
        if not append:
            writer.writerow(HEADER)
            fh.flush()
        if skip is not None:
            bar.set_postfix_str(f"{len(skip)} ids already written", refresh=False)
        for batch in itertools.chain([first] if first is not None else [], batches):
            if batch.samples:
                labels = predictor.predict_samples(batch.samples, report, progress=False)
                writer.writerows((s.id, _cell(v)) for s, v in zip(batch.samples, labels, strict=True))
                fh.flush()
                written += len(batch.samples)
            bar.update(batch.rows)
    finally:
        bar.close()
        if out is not None:
            fh.close()
    return written


def _cell(value: str | float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else value


class ManifestScorer:
    """Scores a batch of manifest columns (``{"id": [...], "text": [...], "image": [...]}``; numpy arrays and pandas
    NaN cells welcome) and returns columns ``id``, ``label``, ``score`` (``id``, ``score`` for a regression
    checkpoint): the function shape of Ray Data's ``map_batches`` (as a class: one Predictor per actor) and, with
    ``DataFrame.to_dict("list")``, of Spark's ``mapInPandas``. Rows are read as ``fusent predict`` reads them (media
    paths relative to ``base``); a row without an id is left out and counted in ``report``."""

    def __init__(self, checkpoint: str | Path, base: str | Path = ".", device: str | None = None):
        from .predict import Predictor

        self.predictor = Predictor.from_pretrained(checkpoint, use_cache=False, device=device)
        self.base, self.report = Path(base), StreamReport()

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
        columns = list(batch)
        records = [{c: _cell_value(batch[c][i]) for c in columns} for i in range(len(batch["id"]))]
        parsed = (manifest_sample(r, i, self.base, self.report) for i, r in enumerate(records, 1))
        samples = [row[0] for row in parsed if row is not None]
        out: dict[str, list[Any]] = {"id": [s.id for s in samples]}
        classify = self.predictor.task.name == "classification"
        if not samples:
            return {**out, "label": [], "score": []} if classify else {**out, "score": []}
        outputs = self.predictor.outputs(samples, self.report, progress=False)
        if not classify:
            return {**out, "score": outputs[:, 0].tolist()}
        proba = outputs.softmax(-1)
        top = proba.argmax(-1)
        out["label"] = [self.predictor.labels[i] for i in top.tolist()]
        out["score"] = proba.gather(1, top[:, None])[:, 0].tolist()
        return out


def _cell_value(value: Any) -> Any:
    """A cell as the manifest reader expects it: pandas' NaN for an empty cell is None, numpy scalars are Python."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value
