"""CSV tables as the dataset adapters read them: UTF-8 with a per-line cp1252 / latin-1 fallback (crawled posts mix
encodings), a row the csv module rejects reported instead of raised, and cells cleaned like post texts. Shared by the
manifest, Memotion and MOSI adapters, so none of them imports another."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .records import ProblemReport
from .text import clean_text, decode_bytes

#: Cells read as empty: "nan" is a pandas NaN that was written out with str().
EMPTY_CELLS = {"", "nan"}


def decode_csv(raw: bytes, report: ProblemReport) -> str:
    """UTF-8 (BOM dropped); lines that are not valid UTF-8 fall back to cp1252, then latin-1 (never fails)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    lines = []
    for line in raw.splitlines(keepends=True):  # per line, so one bad byte does not re-decode the whole file
        text, fallback = decode_bytes(line)
        lines.append(text)
        if fallback:
            report.note("csv_line_decoded_by_fallback")
    return "".join(lines)


def reported_rows(reader: Any, path: Path, report: ProblemReport) -> Iterator[tuple[int, list[str]]]:
    """The (line number, cells) of each row ``reader`` (a ``csv.reader``) can parse; a row it rejects (a cell over
    the csv module's limit, a stray quote) is reported with file and line, and skipped."""
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            if "field limit" in str(exc):
                exc = f"a cell is over the csv module's limit of {csv.field_size_limit():,} characters"
            report.add("bad_row", f"{path.name} line {line}", f"{path}:{line}: {exc}; skipped")
            continue
        yield reader.line_num, cells


def read_csv(path: Path, report: ProblemReport) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """The header (stripped, lower-cased; None for an empty file) and the (line number, cells) of each row after
    it; a row the csv module rejects is reported, not raised."""
    text = decode_csv(path.read_bytes(), report).replace("\x00", "")
    rows = reported_rows(csv.reader(io.StringIO(text, newline="")), path, report)
    header = next(rows, None)
    records = ((line, cells) for line, cells in rows if any(c.strip() for c in cells))  # blank lines skipped
    return ([c.strip().lower() for c in header[1]] if header is not None else None), records


def csv_dicts(path: Path, report: ProblemReport) -> Iterator[dict[str, Any]]:
    """Rows of a CSV read line by line (never the whole file in memory), each line UTF-8, else cp1252, else
    latin-1 (as ``read_csv``), as dicts by header (a missing cell is None, as ``csv.DictReader`` gives it); a row
    the csv module rejects is reported, not raised."""
    with path.open("rb") as fh:
        lines = (decode_bytes(line.removeprefix(b"\xef\xbb\xbf") if i == 0 else line)[0] for i, line in enumerate(fh))
        rows = reported_rows(csv.reader(lines), path, report)
        first = next(rows, None)
        if first is None:
            return
        header = first[1]
        for _, cells in rows:
            if cells:
                yield {name: (cells[k] if k < len(cells) else None) for k, name in enumerate(header)}


def clean_cell(value: str | None) -> str:
    """Fix mojibake/curly quotes (as for MVSA texts) and collapse whitespace; NaN-like cells become ''."""
    if value is None:
        return ""
    text = clean_text(value)
    return "" if text.lower() in EMPTY_CELLS else text
