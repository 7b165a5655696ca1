"""Dataset adapters: the MVSA ``guid,tag`` folder layout and a generic CSV / JSONL / Parquet manifest here, the
others in their own modules (Memotion, CMU-MOSI, RAVDESS, a folder of audio files), and ``ADAPTERS``, the ordered
table of (detect, load) pairs ``load_dataset`` walks. A manifest can also be read row by row
(``iter_manifest_records`` + ``manifest_sample``), which is how ``fusent predict`` streams large ones.

The dataset modules share ``rows`` (checking rows into a bundle) and ``tables`` (reading CSV); none imports this one."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..options import OptionError
from .audio import is_audio_file
from .memotion import is_memotion_folder, load_memotion
from .mosi import is_mosi_folder, load_mosi
from .ravdess import is_ravdess_folder, load_audio_folder, load_ravdess
from .records import MODALITIES, DatasetBundle, ProblemReport, Sample
from .rows import IdSet, check_row, finish_rows, label_key
from .tables import csv_dicts, decode_csv, read_csv
from .text import decode_text
from .video import is_video_file, resolve_video

__all__ = [  # check_row, IdSet and label_key moved to ``rows``: still importable from here, as before
    "ADAPTERS",
    "MANIFEST_SUFFIXES",
    "MVSA_LABELS",
    "Adapter",
    "IdSet",
    "RegressionDataWithLabels",
    "check_row",
    "inside",
    "is_manifest_file",
    "iter_manifest_records",
    "label_key",
    "load_dataset",
    "load_manifest",
    "load_mvsa",
    "manifest_sample",
]

MVSA_LABELS = ["negative", "neutral", "positive"]
_UNLABELLED = {"", "null", "none", "nan"}
#: File suffixes read as a manifest (``.json`` holds JSON lines too; Parquet needs pyarrow).
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
#: What a folder holding a manifest names it, in the order looked for.
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")


class RegressionDataWithLabels(ValueError):
    """Class names given for a table of sentiment scores."""


@dataclass(frozen=True)
class Adapter:
    """One dataset layout: ``detect(path)`` says whether ``path`` is one (cheaply: names and headers, no rows read),
    ``load(path, labels, label_set, allow_outside)`` reads it. ``expects`` says what the layout looks like, for the
    error when no adapter matches; ``folder`` whether ``path`` is a folder; ``label_sets`` whether it has more
    than one label set to pick from (``--label-set``)."""

    name: str
    expects: str
    detect: Callable[[Path], bool]
    load: Callable[[Path, list[str] | None, str | None, bool], DatasetBundle]
    folder: bool = True
    label_sets: bool = False


def _is_mvsa_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "train.txt").exists() or (path / "test_without_label.txt").exists())


def _manifest_in(path: Path) -> Path | None:
    return next((path / name for name in MANIFEST_NAMES if (path / name).exists()), None)


def _has_media_files(path: Path) -> bool:
    return path.is_dir() and any(is_audio_file(p) or is_video_file(p) for p in path.rglob("*"))


def _load_mosi(path: Path, labels: list[str] | None, label_set: str | None, allow_outside: bool) -> DatasetBundle:
    if labels:
        message = f"--labels applies to classification data; {path} is a regression table (scores)"
        raise RegressionDataWithLabels(message)
    return load_mosi(path)


#: The adapters ``load_dataset`` tries, first match wins. RAVDESS comes first (``--label-set`` is for it alone);
#: MOSI before Memotion, as both may hold a test_without_label.csv; a folder of media files is the last folder kind.
ADAPTERS: list[Adapter] = [
    Adapter(
        "ravdess",
        "a RAVDESS folder (Actor_NN/MM-VV-EE-II-SS-RR-NN.flac)",
        lambda p: p.is_dir() and is_ravdess_folder(p),
        lambda p, labels, label_set, _: load_ravdess(p, labels=labels, label_set=label_set),
        label_sets=True,
    ),
    Adapter(
        "mvsa",
        "an MVSA folder (train.txt / test_without_label.txt + data/)",
        _is_mvsa_folder,
        lambda p, labels, *_: load_mvsa(p, labels=labels),
    ),
    Adapter(
        "mosi",
        "a CMU-MOSI style folder (label.csv with id,text,label,mode)",
        lambda p: p.is_dir() and is_mosi_folder(p),
        _load_mosi,
    ),
    Adapter(
        "memotion",
        "a Memotion folder (labels.csv / test_without_label.csv + images/)",
        lambda p: p.is_dir() and is_memotion_folder(p),
        lambda p, labels, *_: load_memotion(p, labels=labels),
    ),
    Adapter(
        "manifest folder",
        "a folder with manifest.csv / manifest.jsonl",
        lambda p: p.is_dir() and _manifest_in(p) is not None,
        lambda p, labels, _, allow_outside: load_manifest(_manifest_in(p), labels=labels, allow_outside=allow_outside),
    ),
    Adapter(
        "audio folder",
        "a folder of audio or video files (to predict)",
        _has_media_files,
        lambda p, labels, *_: load_audio_folder(p, labels=labels),
    ),
    Adapter(
        "manifest",
        "a .csv/.jsonl/.json/.parquet manifest",
        lambda p: not p.is_dir() and is_manifest_file(p),
        lambda p, labels, _, allow_outside: load_manifest(p, labels=labels, allow_outside=allow_outside),
        folder=False,
    ),
]


def load_dataset(
    path: str | Path, labels: list[str] | None = None, label_set: str | None = None, allow_outside: bool = False
) -> DatasetBundle:
    """Read ``path`` with the first of ``ADAPTERS`` that recognises it: an MVSA, Memotion, CMU-MOSI or RAVDESS
    folder, a folder with a manifest, a .csv/.jsonl manifest, or a folder of audio or video files (to predict).
    ``labels`` names the classes (rows with another label are reported and left out); ``label_set`` picks one of a
    dataset's label sets (RAVDESS: sentiment or emotion); ``allow_outside`` lets a manifest name files outside its
    own folder."""
    path = Path(path)
    adapter = next((a for a in ADAPTERS if a.detect(path)), None)
    if label_set is not None and (adapter is None or not adapter.label_sets):
        kinds = " or ".join(a.expects for a in ADAPTERS if a.label_sets)
        raise ValueError(f"--label-set applies to {kinds}; {path} is not one")
    if adapter is None:
        raise FileNotFoundError(nothing_matched(path))
    return adapter.load(path, labels, label_set, allow_outside)


def nothing_matched(path: Path) -> str:
    """The error when no adapter reads ``path``, listing what each expects: the folder kinds for a folder, every
    kind for anything else."""
    if path.is_dir():
        kinds = [a.expects for a in ADAPTERS if a.folder]
        return f"{path} is neither {', '.join(kinds[:-1])}, nor {kinds[-1]}"
    return f"no dataset at {path}: pass {'; '.join(a.expects for a in ADAPTERS)}"


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

    return finish_rows(rows(), labels or MVSA_LABELS, report, name=root.name)


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
        records = csv_dicts(path, report)
    else:
        records = _jsonl_records(path, report)
    for i, rec in enumerate(records):
        if i == 0 and "id" not in rec:
            raise ValueError(f"manifest {path} needs an 'id' column; it has {sorted(rec)}")
        yield rec


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
    bundle = finish_rows((row for row in parsed if row is not None), labels, report, name=path.stem)
    bundle.prediction_header = "id,label"  # predictions in the manifest's own columns, so they read back in
    return bundle


def _manifest_records(path: Path, report: ProblemReport) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for each row of a manifest, ``where`` naming its row for reports."""
    if path.suffix.lower() == ".csv":
        header, cells_of = read_csv(path, report)
        for line_no, cells in cells_of:
            if header is not None and len(cells) > len(header):  # an unquoted comma: which cell is which is unknown
                report.add("bad_row", f"line {line_no}", f"{path}:{line_no} has {len(cells)} fields, not {len(header)}")
                continue
            yield f"line {line_no}", dict(zip(header or [], cells, strict=False))
        return
    text = decode_csv(path.read_bytes(), report)
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
