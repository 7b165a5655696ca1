"""CMU-MOSI style regression tables (as MMSA pipelines use them): ``label.csv`` with id,text,label,mode and
``test_without_label.csv`` with id,text. ``label`` is a sentiment score in [-3, 3]; ``mode`` is the dataset's own
split (train -> train, dev/valid -> validation, test -> held out of training and selection); a table without
labelled test rows holds out its dev rows as the test part instead (see ``split_labelled``). Segments of one video
share a ``group`` (the id before its last ``_``), so drawn splits and folds keep a video on one side.

MMSA's own ``video_id,clip_id`` columns are read as the id ``{video_id}_{clip_id}`` (the form CMU-MOSI ids take).
When the folder has MMSA's ``Raw/{video_id}/{clip_id}.mp4`` clips, each segment also gets its clip (frames and
soundtrack, ``data/video.py``): the real corpus then trains seed 001's text + image + audio setting with one command.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from .records import DatasetBundle, ProblemReport, Sample
from .rows import finish_rows
from .tables import clean_cell, read_csv
from .video import VIDEO_SUFFIXES

LABELLED_FILE, UNLABELLED_FILE = "label.csv", "test_without_label.csv"
#: ``id,score``: the README's format for predictions of test_without_label.csv.
MOSI_PREDICTION_HEADER = "id,score"
SCORE_RANGE = (-3.0, 3.0)
#: ``mode`` cell -> split; anything else is reported and not used.
MODES = {"train": "train", "dev": "val", "valid": "val", "val": "val", "validation": "val", "test": "test"}


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        return [c.strip().lower() for c in fh.readline().split(",")]


def is_mosi_folder(path: Path) -> bool:
    """``label.csv`` (MMSA's name), or a ``test_without_label.csv`` keyed by ``id`` (Memotion's is ``image_name``)."""
    if (path / LABELLED_FILE).is_file():
        return True
    unlabelled = path / UNLABELLED_FILE
    return unlabelled.is_file() and "id" in _header(unlabelled) and "image_name" not in _header(unlabelled)


def video_of(sid: str, record: dict[str, str]) -> str:
    """The video a segment id belongs to: MMSA's ``video_id`` column, else the id before its last ``_``."""
    if "clip_id" in record and record.get("id"):
        return record["id"]
    return sid.rsplit("_", 1)[0] if "_" in sid else sid


def raw_clip(raw: Path, sid: str, record: dict[str, str], report: ProblemReport) -> Path | None:
    """``Raw/{video_id}/{clip_id}.mp4`` (or another video suffix) of a segment; a missing clip is reported."""
    if "clip_id" in record:
        video, clip = record["id"], record["clip_id"]
    else:  # an id ``{video_id}_{clip_id}``
        video, clip = video_of(sid, record), sid.rsplit("_", 1)[-1]
    for suffix in VIDEO_SUFFIXES:
        path = raw / video / f"{clip}{suffix}"
        if path.is_file():
            return path
    report.add("missing_video", sid, f"no clip {raw / video / clip}.mp4 (or {', '.join(VIDEO_SUFFIXES[1:])})")
    return None


def _score(raw: str, sid: str, low: float, high: float, report: ProblemReport) -> float | None:
    """The label cell as a float in [low, high]; anything else is reported and gives None (not trained on)."""
    try:
        value = float(raw)
    except ValueError:
        report.add("bad_score", sid, f"label {raw!r} is not a number; not trained on")
        return None
    if not math.isfinite(value):
        report.add("bad_score", sid, f"label {raw!r} is not a finite number; not trained on")
        return None
    if not low <= value <= high:
        report.add("score_out_of_range", sid, f"label {value} is outside [{low:g}, {high:g}]; not trained on")
        return None
    return value


def load_mosi(root: str | Path, score_range: tuple[float, float] = SCORE_RANGE) -> DatasetBundle:
    """A regression bundle (``task="regression"``, targets in ``Sample.score``) with the table's own split.

    Rows with a bad score, no text (the only modality here), an unknown mode or a repeated id are reported and not
    trained on; every id of test_without_label.csv is kept for prediction, even one with no text.
    """
    root = Path(root)
    report = ProblemReport()
    raw = root / "Raw" if (root / "Raw").is_dir() else None  # MMSA's clips: text is then not the only modality
    modes: dict[str, str] = {}
    has_mode = False

    def rows() -> Iterable[tuple[Sample, bool]]:
        nonlocal has_mode
        for file_name, labelled in ((LABELLED_FILE, True), (UNLABELLED_FILE, False)):
            path = root / file_name
            if not path.is_file():
                continue
            header, records = read_csv(path, report)
            if header is None:
                continue
            if "id" not in header and {"video_id", "clip_id"} <= set(header):
                header = ["id" if c == "video_id" else c for c in header]
            need = ["id", "text", "label"] if labelled else ["id", "text"]
            if not set(need) <= set(header):
                raise ValueError(f"{path} needs columns {', '.join(need)}; its header is {header}")
            has_mode = has_mode or (labelled and "mode" in header)
            for line_no, cells in records:
                rec = dict(zip(header, (c.strip() for c in cells), strict=False))
                sid = rec.get("id", "")
                if sid and "clip_id" in rec:
                    sid = f"{sid}_{rec['clip_id']}"
                where = sid or f"{file_name} line {line_no}"
                if not sid:
                    report.add("bad_row", where, f"{path}:{line_no} has no id; skipped")
                    continue
                if len(cells) != len(header):  # an unquoted comma or a short row: which cell is which is unknown
                    report.add("bad_row", sid, f"{path}:{line_no} has {len(cells)} fields, not {len(header)}")
                    if labelled:
                        continue
                    rec["text"] = ""  # still an id to predict: no prediction row may go missing
                text = clean_cell(rec.get("text")) or None
                video = raw_clip(raw, sid, rec, report) if raw is not None else None
                score = None
                if labelled:
                    mode = MODES.get(rec.get("mode", "train").lower()) if "mode" in header else "train"
                    if mode is None:
                        report.add("unknown_split", sid, f"mode {rec.get('mode')!r} is not one of {sorted(MODES)}")
                        continue
                    score = _score(rec.get("label", ""), sid, *score_range, report)
                    if text is None and video is None:
                        report.add("empty_text", sid, "text is empty; not trained on (text is the only modality)")
                        score = None
                    modes.setdefault(sid, mode)  # the first row of an id is the one finish_rows keeps
                elif text is None:
                    report.add("empty_text", sid, "text is empty; predicted without it")
                yield Sample(id=sid, text=text, score=score, group=video_of(sid, rec), video=video), labelled

    bundle = finish_rows(rows(), None, report, name=root.name, task="regression")
    bundle.prediction_header = MOSI_PREDICTION_HEADER
    if has_mode:
        bundle.given_split = {s.id: modes[s.id] for s in bundle.labelled}
    return bundle
