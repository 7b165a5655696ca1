"""Dataset adapters: the MVSA ``guid,tag`` folder layout and a generic CSV / JSONL / Parquet manifest (others in
their own modules: Memotion, RAVDESS, a folder of audio files). A manifest can also be read row by row
(``iter_manifest_records`` + ``manifest_sample``), which is how ``fusent predict`` streams large ones."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ..options import OptionError
from .records import MODALITIES, DatasetBundle, ProblemReport, Sample, TaskName
from .text import decode_bytes, decode_text
from .video import resolve_video

MVSA_LABELS = ["negative", "neutral", "positive"]
_UNLABELLED = {"", "null", "none", "nan"}
#: File suffixes read as a manifest (``.json`` holds JSON lines too; Parquet needs pyarrow).
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


class RegressionDataWithLabels(ValueError):
    """Class names given for a table of sentiment scores."""


def load_dataset(
    path: str | Path, labels: list[str] | None = None, label_set: str | None = None, allow_outside: bool = False
) -> DatasetBundle:
    """Pick the adapter from what ``path`` is: an MVSA, Memotion or RAVDESS folder, a folder with a manifest, a
    .csv/.jsonl manifest, or a folder of audio or video files (to predict). ``labels`` names the classes (rows with
    another label are reported and left out); ``label_set`` picks one of a dataset's label sets (RAVDESS: sentiment or
    emotion); ``allow_outside`` lets a manifest name files outside its own folder."""
    path = Path(path)
    from .ravdess import is_ravdess_folder, load_audio_folder, load_ravdess  # imported here: they import this module

    if path.is_dir() and is_ravdess_folder(path):
        return load_ravdess(path, labels=labels, label_set=label_set)
    if label_set is not None:
        raise ValueError(f"--label-set applies to RAVDESS folders; {path} is not one")
    if path.is_dir():
        if (path / "train.txt").exists() or (path / "test_without_label.txt").exists():
            return load_mvsa(path, labels=labels)
        from .memotion import is_memotion_folder, load_memotion  # imported here: they import this module
        from .mosi import is_mosi_folder, load_mosi

        if is_mosi_folder(path):  # before Memotion: both may hold a test_without_label.csv
            if labels:
                raise RegressionDataWithLabels(
                    f"--labels applies to classification data; {path} is a regression table (scores)"
                )
            return load_mosi(path)
        if is_memotion_folder(path):
            return load_memotion(path, labels=labels)
        for name in ("manifest.csv", "manifest.jsonl"):
            if (path / name).exists():
                return load_manifest(path / name, labels=labels, allow_outside=allow_outside)
        try:
            return load_audio_folder(path, labels=labels)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path} is neither an MVSA folder (train.txt / test_without_label.txt + data/), a Memotion folder "
                "(labels.csv / test_without_label.csv + images/), a CMU-MOSI style folder (label.csv with "
                "id,text,label,mode), a RAVDESS folder (Actor_NN/MM-VV-EE-II-SS-RR-NN.flac), a folder with "
                "manifest.csv / manifest.jsonl, nor a folder of audio or video files"
            ) from None
    if is_manifest_file(path):
        return load_manifest(path, labels=labels, allow_outside=allow_outside)
    raise FileNotFoundError(f"no dataset at {path}: pass an MVSA folder or a .csv/.jsonl/.json/.parquet manifest")


def is_manifest_file(path: str | Path) -> bool:
    """Whether ``path`` names a manifest file (by suffix; folders holding a manifest.csv are not counted)."""
    return Path(path).suffix.lower() in MANIFEST_SUFFIXES


def _field(record: dict[str, Any], key: str) -> str:
    """A manifest cell as text; 0 is a value, only None/absent is empty."""
    value = record.get(key)
    return "" if value is None else str(value).strip()


def inside(base: Path, path: Path) -> bool:
    """Whether ``path`` (relative ones from ``base``) names something under ``base``, judged from the names alone
    (``..`` resolved lexically; a link placed inside the folder is trusted, as its owner put it there)."""
    base = Path(os.path.normpath(base.absolute()))
    return Path(os.path.normpath(base / path)).is_relative_to(base)


def _media_path(
    record: dict[str, Any],
    modality: str,
    base: Path,
    sample_id: str,
    report: ProblemReport,
    allow_outside: bool = False,
) -> Path | None:
    """A manifest's image / audio cell as a path (relative ones from the manifest's folder); a missing file, or one
    outside the manifest's folder (unless ``allow_outside``), is reported and the sample goes on without it."""
    if not record.get(modality):
        return None
    path = Path(str(record[modality]))
    if not allow_outside and not inside(base, path):
        report.add(
            "outside_data_folder",
            sample_id,
            f"{modality} path {str(path)!r} is outside the manifest's folder {base}; not read (pass --allow-outside "
            "to read files anywhere)",
        )
        return None
    path = path if path.is_absolute() else base / path
    if not path.exists():
        report.add(f"missing_{modality}", sample_id, f"{modality} file not found: {path}")
        return None
    return path


def _read_text_file(path: Path, sample_id: str, report: ProblemReport) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        report.add("missing_text", sample_id, f"text file not found: {path}")
        return None
    text, fallback = decode_text(raw)
    if fallback:
        report.note("text_decoded_by_fallback")
    if not text:
        report.add("empty_text", sample_id, f"text is empty: {path}")
        return None
    return text


def _finish(
    rows: Iterable[tuple[Sample, bool]],
    labels: list[str] | None,
    report: ProblemReport,
    name: str,
    task: TaskName = "classification",
) -> DatasetBundle:
    """Check ids and labels for a stream of (sample, is_labelled) rows, never dropping one silently.

    For regression, a labelled row whose score is None was rejected (and reported) by its adapter: not trained on.
    """
    rows = list(rows)
    if task == "regression":
        labels = []
    else:
        labels = _canonical_labels(labels, [s.label for s, lab in rows if lab and s.label])
        spelled = {label_key(label): label for label in labels}
        for sample, is_labelled in rows:
            if is_labelled and sample.label is not None:
                sample.label = spelled.get(label_key(sample.label), sample.label)
    seen: dict[bool, set[str]] = {True: set(), False: set()}  # per section: an id may be both labelled and asked
    labelled: list[Sample] = []
    unlabelled: list[Sample] = []
    for sample, is_labelled in rows:
        if check_row(sample, is_labelled, labels, report, seen[is_labelled], task):
            (labelled if is_labelled else unlabelled).append(sample)
    return DatasetBundle(
        labelled=labelled, unlabelled=unlabelled, labels=list(labels), report=report, name=name, task=task
    )


def label_key(label: str) -> str:
    """What makes two spellings of a label the same class: case and whitespace do not count."""
    return " ".join(str(label).split()).casefold()


def _canonical_labels(given: list[str] | None, seen: list[str]) -> list[str]:
    """The class names: ``given`` as given (refused when two differ only in case or spacing), else one per label
    seen, spelled as most rows spell it ('Positive ' and 'POSITIVE' join 'positive'), sorted."""
    if given is not None:
        keys: dict[str, str] = {}
        for label in given:
            if label_key(label) in keys:
                raise ValueError(f"labels {keys[label_key(label)]!r} and {label!r} are the same class; name it once")
            keys[label_key(label)] = label
        return list(given)
    spellings: dict[str, Counter[str]] = {}
    for label in seen:
        spellings.setdefault(label_key(label), Counter())[" ".join(label.split())] += 1
    return sorted(counts.most_common(1)[0][0] for counts in spellings.values())


class IdSet(Protocol):
    """What ``check_row`` needs of the ids seen so far: a set, or ``fusent.stream.SeenIds`` for huge manifests."""

    def __contains__(self, sample_id: object) -> bool: ...

    def add(self, sample_id: str) -> None: ...


def check_row(
    sample: Sample,
    is_labelled: bool,
    labels: list[str],
    report: ProblemReport,
    seen: IdSet,
    task: TaskName = "classification",
) -> bool:
    """Whether one row is kept (its id first seen, a known label or a score when labelled); what is wrong is
    reported. A row to predict has its label and score cleared. ``seen`` collects the ids kept so far."""
    if sample.id in seen:
        report.add("duplicate_id", sample.id, "id appears more than once; keeping the first row")
        return False
    seen.add(sample.id)
    if all(getattr(sample, m) is None for m in MODALITIES) and getattr(sample, "video", None) is None:
        report.add("no_modality", sample.id, f"none of {', '.join(MODALITIES)} given")
    if not is_labelled:
        sample.label, sample.score = None, None
        return True
    if task == "regression":
        return sample.score is not None
    if sample.label not in labels:
        report.add("unknown_label", sample.id, f"label {sample.label!r} is not one of {labels}; not trained on")
        return False
    return True


def _read_guid_file(path: Path) -> list[tuple[str, str]]:
    out = []
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for line_no, line in enumerate(fh):
            line = line.strip()
            if not line or (line_no == 0 and line.lower().startswith("guid")):
                continue
            guid, _, tag = line.partition(",")
            out.append((guid.strip(), tag.strip().lower()))
    return out


def load_mvsa(root: str | Path, labels: list[str] | None = None) -> DatasetBundle:
    """MVSA ``guid,tag`` layout: data/{guid}.txt and .jpg, train.txt (labelled), test_without_label.txt."""
    root = Path(root)
    report = ProblemReport()

    def rows() -> Iterable[tuple[Sample, bool]]:
        for file_name, labelled in (("train.txt", True), ("test_without_label.txt", False)):
            if not (root / file_name).exists():
                continue
            for guid, tag in _read_guid_file(root / file_name):
                if not inside(root / "data", Path(guid)):
                    message = f"{root / file_name}: guid {guid!r} names files outside data/"
                    report.add("outside_data_folder", guid, message)
                    continue
                text = _read_text_file(root / "data" / f"{guid}.txt", guid, report)
                image = root / "data" / f"{guid}.jpg"
                if not image.exists():
                    report.add("missing_image", guid, f"image file not found: {image}")
                    image = None
                is_labelled = labelled and tag not in _UNLABELLED
                yield Sample(id=guid, text=text, image=image, label=tag if is_labelled else None), is_labelled

    return _finish(rows(), labels or MVSA_LABELS, report, name=root.name)


def _parquet_records(path: Path, chunk_rows: int) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow: pip install 'fusent[parquet]'") from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        yield from batch.to_pylist()


def _jsonl_records(path: Path, report: ProblemReport) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                report.add("bad_row", f"line {line_no}", f"{path}:{line_no} is not JSON ({exc}); skipped")
                continue
            if isinstance(record, dict):
                yield record
            else:
                report.add("bad_row", f"line {line_no}", f"{path}:{line_no} is not a JSON object; skipped")


def iter_manifest_records(path: str | Path, report: ProblemReport, chunk_rows: int = 4096) -> Iterator[dict[str, Any]]:
    """A manifest's rows one at a time, as dicts, never the whole file in memory (Parquet is read ``chunk_rows``
    rows at a time). Raises ValueError when the first row has no ``id`` column."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        records = _parquet_records(path, chunk_rows)
    elif suffix == ".csv":
        records = _csv_records(path)
    else:
        records = _jsonl_records(path, report)
    for i, rec in enumerate(records):
        if i == 0 and "id" not in rec:
            raise ValueError(f"manifest {path} needs an 'id' column; it has {sorted(rec)}")
        yield rec


def _csv_records(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a CSV read line by line, each line UTF-8, else cp1252, else latin-1 (as ``load_manifest``)."""
    with path.open("rb") as fh:
        lines = (decode_bytes(line.removeprefix(b"\xef\xbb\xbf") if i == 0 else line)[0] for i, line in enumerate(fh))
        yield from csv.DictReader(lines)


def manifest_sample(
    record: dict[str, Any],
    row: int | str,
    base: Path,
    report: ProblemReport,
    name: str = "manifest",
    allow_outside: bool = False,
) -> tuple[Sample, bool] | None:
    """One manifest row (``row``: its 1-based number or where it is) as (sample, is_labelled); media paths are
    relative to ``base`` and inside it unless ``allow_outside``. A row without an id is reported and gives None."""
    sid = _field(record, "id")
    where = f"row {row}" if isinstance(row, int) else row
    if not sid:
        report.add("bad_row", where, f"{name} {where} has no id; skipped")
        return None
    text = record.get("text")
    text = " ".join(str(text).split()) if text is not None else ""
    if not text:
        report.add("empty_text", sid, "text is empty")
    media = {m: _media_path(record, m, base, sid, report, allow_outside) for m in ("image", "audio")}
    media["video"] = resolve_video(record.get("video"), base, sid, report, confine=not allow_outside)
    label = _field(record, "label")
    group = _field(record, "group") or None  # optional: samples of one group stay on one side of a split
    sample = Sample(id=sid, text=text or None, **media, label=label, group=group)
    return sample, label.lower() not in _UNLABELLED


def load_manifest(path: str | Path, labels: list[str] | None = None, allow_outside: bool = False) -> DatasetBundle:
    """CSV, JSONL (one object a line), JSON (a list of objects) or Parquet with columns id, text, image, audio and
    video (paths, relative to the manifest and inside its folder unless ``allow_outside``), label (empty = predict),
    optional group.

    Lines that are not UTF-8 fall back to cp1252 then latin-1; a row the file format rejects (a cell over the csv
    module's limit, a JSONL line that is not an object) is reported with its line and left out.
    """
    path = Path(path)
    report = ProblemReport()
    if path.suffix.lower() == ".parquet":
        records = [(i, rec) for i, rec in enumerate(iter_manifest_records(path, report), 1)]
    else:
        records = list(_manifest_records(path, report))
    if not records:
        raise OptionError(f"manifest {path} has no rows: give a header id,text,image,audio,label and a row per post")
    if not any("id" in rec for _, rec in records):
        raise ValueError(f"manifest {path} needs an 'id' column; it has {sorted(records[0][1])}")
    if not any(m in rec for _, rec in records for m in (*MODALITIES, "video")):
        columns = ",".join(records[0][1])
        raise OptionError(
            f"manifest {path} has no text, image, audio or video column (only {columns}): nothing to read"
        )
    parsed = (manifest_sample(rec, where, path.parent, report, str(path), allow_outside) for where, rec in records)
    bundle = _finish((row for row in parsed if row is not None), labels, report, name=path.stem)
    bundle.prediction_header = "id,label"  # predictions in the manifest's own columns, so they read back in
    return bundle


def _manifest_records(path: Path, report: ProblemReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for each row of a manifest, ``where`` naming its row for reports."""
    from .memotion import _decode_csv, _read_csv  # imported here: memotion imports this module

    if path.suffix.lower() == ".csv":
        header, cells_of = _read_csv(path, report)
        for line_no, cells in cells_of:
            if header is not None and len(cells) > len(header):  # an unquoted comma: which cell is which is unknown
                report.add("bad_row", f"line {line_no}", f"{path}:{line_no} has {len(cells)} fields, not {len(header)}")
                continue
            yield f"line {line_no}", dict(zip(header or [], cells, strict=False))
        return
    text = _decode_csv(path.read_bytes(), report)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON ({exc}); give a list of objects, or rename it .jsonl") from None
        if not isinstance(data, list):
            raise ValueError(f"{path} holds a JSON {type(data).__name__}; a .json manifest is a list of objects")
        lines = [(f"item {i}", item, None) for i, item in enumerate(data)]
    else:
        lines = []
        for line_no, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    lines.append((f"line {line_no}", json.loads(line), None))
                except json.JSONDecodeError as exc:
                    lines.append((f"line {line_no}", None, exc))
    for where, item, error in lines:
        at = f"{path}:{where.split()[-1]}"
        if error is not None:
            report.add("bad_row", where, f"{at} is not JSON ({error}); skipped")
        elif not isinstance(item, dict):
            report.add("bad_row", where, f"{at} is not a JSON object but a {type(item).__name__}; skipped")
        else:
            yield where, item
