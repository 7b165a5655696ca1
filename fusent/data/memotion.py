"""Memotion 7k adapter (SemEval-2020 Task 8): labels.csv, test_without_label.csv and images/.

Task A's 3-class sentiment is read from the 5-class ``overall_sentiment`` column as the dataset README says:
very_positive+positive -> positive, very_negative+negative -> negative, neutral -> neutral.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .records import DatasetBundle, ProblemReport, Sample
from .rows import finish_rows
from .tables import clean_cell, read_csv

MEMOTION_LABELS = ["negative", "neutral", "positive"]
#: The raw 5-class ``overall_sentiment`` values, most negative first.
MEMOTION_SENTIMENTS = ["very_negative", "negative", "neutral", "positive", "very_positive"]
SENTIMENT_TO_3 = {
    "very_negative": "negative",
    "negative": "negative",
    "neutral": "neutral",
    "positive": "positive",
    "very_positive": "positive",
}
#: ``image_name,overall_sentiment``: the README's format for predictions of test_without_label.csv.
MEMOTION_PREDICTION_HEADER = "image_name,overall_sentiment"

LABELLED_FILE, UNLABELLED_FILE, IMAGE_DIR = "labels.csv", "test_without_label.csv", "images"


def is_memotion_folder(path: Path) -> bool:
    return (path / LABELLED_FILE).is_file() or (path / UNLABELLED_FILE).is_file()


def _sentiment(raw: str, labels: list[str]) -> str:
    """The raw overall_sentiment as one of ``labels``: kept when it already is one (e.g. a 5-class label set),
    else mapped 5 -> 3 classes; anything else is returned as-is for finish_rows to report as unknown_label."""
    value = "_".join(raw.strip().lower().replace("-", " ").split())
    if value in labels:
        return value
    return SENTIMENT_TO_3.get(value, value)


class _ImageIndex:
    """Finds images/{image_name}; falls back to a case-insensitive match (copies made on case-folding disks)."""

    def __init__(self, folder: Path):
        self.folder = folder
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        self.by_lower = {n.lower(): n for n in names}
        self.names = set(names)

    def find(self, name: str) -> tuple[Path | None, bool]:
        """Return (path or None, whether the name only matched case-insensitively)."""
        if not name or "/" in name or "\\" in name:  # a bare file name only: never look outside images/
            return None, False
        if name in self.names:
            return self.folder / name, False
        actual = self.by_lower.get(name.lower())
        return (self.folder / actual, True) if actual else (None, False)


def load_memotion(root: str | Path, labels: list[str] | None = None) -> DatasetBundle:
    """Memotion 7k layout: ``labels.csv`` (labelled), ``test_without_label.csv`` (to predict), ``images/``.

    Sample ids are the ``image_name`` cells exactly as written; text is ``text_corrected``, or ``text_ocr`` where
    that is empty (noted as ``text_from_ocr``); labels are 3-class unless ``labels`` names the raw classes.
    """
    root = Path(root)
    labels = list(labels or MEMOTION_LABELS)
    report = ProblemReport()
    images = _ImageIndex(root / IMAGE_DIR)

    def rows() -> Iterable[tuple[Sample, bool]]:
        for file_name, labelled in ((LABELLED_FILE, True), (UNLABELLED_FILE, False)):
            path = root / file_name
            if not path.is_file():
                continue
            header, records = read_csv(path, report)
            need = ["image_name", "overall_sentiment"] if labelled else ["image_name"]
            if header is not None and not set(need) <= set(header):
                raise ValueError(f"{path} needs columns {', '.join(need)}; its header is {header}")
            for line_no, cells in records:
                where = f"{file_name} line {line_no}"
                sid = cells[header.index("image_name")] if len(cells) > header.index("image_name") else ""
                if not sid.strip():
                    report.add("bad_row", where, f"{path}:{line_no} has no image_name; skipped")
                    continue
                if len(cells) > len(header):  # an unquoted comma: which cell is which is unknown
                    keep = "kept with its image only" if not labelled else "skipped"
                    report.add("bad_row", sid, f"{path}:{line_no} has {len(cells)} fields, not {len(header)}; {keep}")
                    if not labelled:  # still an id to predict: no prediction row may go missing
                        report.add("empty_text", sid, "text not read from a malformed row")
                        yield _sample(sid, None, None, images, report), False
                    continue
                if len(cells) < len(header):
                    report.add(
                        "bad_row",
                        sid,
                        f"{path}:{line_no} has {len(cells)} fields, not {len(header)}; rest read as empty",
                    )
                rec = dict(zip(header, cells, strict=False))
                text = clean_cell(rec.get("text_corrected"))
                if not text:
                    text = clean_cell(rec.get("text_ocr"))
                    if text:
                        report.note("text_from_ocr")
                if not text:
                    report.add("empty_text", sid, "text_corrected and text_ocr are both empty")
                label = _sentiment(rec.get("overall_sentiment") or "", labels) if labelled else None
                yield _sample(sid, text or None, label, images, report), labelled

    bundle = finish_rows(rows(), labels, report, name=root.name)
    bundle.prediction_header = MEMOTION_PREDICTION_HEADER
    return bundle


def _sample(sid: str, text: str | None, label: str | None, images: _ImageIndex, report: ProblemReport) -> Sample:
    image, case_only = images.find(sid.strip())
    if image is None:
        report.add("missing_image", sid, f"image file not found: {images.folder / sid.strip()}")
    elif case_only:
        report.note("image_name_case_mismatch")
    return Sample(id=sid, text=text, image=image, label=label)
