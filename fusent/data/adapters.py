"""Dataset adapters: the MVSA ``guid,tag`` folder layout and a generic CSV/JSONL manifest (others in their own
modules: Memotion, RAVDESS, a folder of audio files)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .records import MODALITIES, DatasetBundle, ProblemReport, Sample, TaskName
from .text import decode_text
from .video import resolve_video

MVSA_LABELS = ["negative", "neutral", "positive"]
_UNLABELLED = {"", "null", "none", "nan"}


def load_dataset(path: str | Path, labels: list[str] | None = None, label_set: str | None = None) -> DatasetBundle:
    """Pick the adapter from what ``path`` is: an MVSA, Memotion or RAVDESS folder, a folder with a manifest, a
    .csv/.jsonl manifest, or a folder of audio or video files (to predict). ``label_set`` picks one of a dataset's
    label sets (RAVDESS: sentiment or emotion)."""
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
            return load_mosi(path)
        if is_memotion_folder(path):
            return load_memotion(path, labels=labels)
        for name in ("manifest.csv", "manifest.jsonl"):
            if (path / name).exists():
                return load_manifest(path / name, labels=labels)
        try:
            return load_audio_folder(path, labels=labels)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path} is neither an MVSA folder (train.txt / test_without_label.txt + data/), a Memotion folder "
                "(labels.csv / test_without_label.csv + images/), a CMU-MOSI style folder (label.csv with "
                "id,text,label,mode), a RAVDESS folder (Actor_NN/MM-VV-EE-II-SS-RR-NN.flac), a folder with "
                "manifest.csv / manifest.jsonl, nor a folder of audio or video files"
            ) from None
    if path.suffix.lower() in {".csv", ".jsonl", ".json"}:
        return load_manifest(path, labels=labels)
    raise FileNotFoundError(f"no dataset at {path}: pass an MVSA folder or a .csv/.jsonl manifest")


def _field(record: dict[str, Any], key: str) -> str:
    """A manifest cell as text; 0 is a value, only None/absent is empty."""
    value = record.get(key)
    return "" if value is None else str(value).strip()


def _media_path(
    record: dict[str, Any], modality: str, base: Path, sample_id: str, report: ProblemReport
) -> Path | None:
    """A manifest's image / audio cell as a path (relative ones from the manifest's folder); a missing file is
    reported and the sample goes on without it."""
    if not record.get(modality):
        return None
    path = Path(str(record[modality]))
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
    elif labels is None:
        labels = sorted({s.label for s, lab in rows if lab and s.label})
    seen: dict[bool, set[str]] = {True: set(), False: set()}  # per section: an id may be both labelled and asked
    labelled: list[Sample] = []
    unlabelled: list[Sample] = []
    for sample, is_labelled in rows:
        if sample.id in seen[is_labelled]:
            report.add("duplicate_id", sample.id, "id appears more than once; keeping the first row")
            continue
        seen[is_labelled].add(sample.id)
        if all(getattr(sample, m) is None for m in MODALITIES) and sample.video is None:
            report.add("no_modality", sample.id, f"none of {', '.join(MODALITIES)} given")
        if not is_labelled:
            sample.label, sample.score = None, None
            unlabelled.append(sample)
        elif task == "regression":
            if sample.score is not None:
                labelled.append(sample)
        elif sample.label not in labels:
            report.add("unknown_label", sample.id, f"label {sample.label!r} is not one of {labels}; not trained on")
        else:
            labelled.append(sample)
    return DatasetBundle(
        labelled=labelled, unlabelled=unlabelled, labels=list(labels), report=report, name=name, task=task
    )


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
                text = _read_text_file(root / "data" / f"{guid}.txt", guid, report)
                image = root / "data" / f"{guid}.jpg"
                if not image.exists():
                    report.add("missing_image", guid, f"image file not found: {image}")
                    image = None
                is_labelled = labelled and tag not in _UNLABELLED
                yield Sample(id=guid, text=text, image=image, label=tag if is_labelled else None), is_labelled

    return _finish(rows(), labels or MVSA_LABELS, report, name=root.name)


def load_manifest(path: str | Path, labels: list[str] | None = None) -> DatasetBundle:
    """CSV or JSONL with columns id, text, image, audio and video (paths, relative to the manifest), label (empty =
    predict)."""
    path = Path(path)
    report = ProblemReport()
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            records = list(csv.DictReader(fh))
    else:
        records = []
        with path.open(encoding="utf-8-sig") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    report.add("bad_row", f"line {line_no}", f"{path}:{line_no} is not JSON ({exc})")
    if records and "id" not in records[0]:
        raise ValueError(f"manifest {path} needs an 'id' column; it has {sorted(records[0])}")

    def rows() -> Iterable[tuple[Sample, bool]]:
        for i, rec in enumerate(records):
            sid = _field(rec, "id")
            if not sid:
                report.add("bad_row", f"row {i + 1}", f"{path} row {i + 1} has no id; skipped")
                continue
            text = rec.get("text")
            text = " ".join(str(text).split()) if text is not None else ""
            if not text:
                report.add("empty_text", sid, "text is empty")
            media = {m: _media_path(rec, m, path.parent, sid, report) for m in ("image", "audio")}
            media["video"] = resolve_video(rec.get("video"), path.parent, sid, report)  # confined to the folder
            label = _field(rec, "label")
            group = _field(rec, "group") or None  # optional: samples of one group stay on one side of a split
            yield Sample(id=sid, text=text or None, **media, label=label, group=group), label.lower() not in _UNLABELLED

    return _finish(rows(), labels, report, name=path.stem)
