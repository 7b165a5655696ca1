"""Robust text decoding for crawled posts with mixed encodings."""

from __future__ import annotations

import ftfy


def decode_text(raw: bytes) -> tuple[str, bool]:
    """Decode bytes as UTF-8, else Windows-1252, else Latin-1 (which never fails); then fix mojibake.

    Returns the text and whether a fallback encoding was needed.
    """
    fallback = False
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            fallback = True
    text = ftfy.fix_text(text)
    return " ".join(text.split()), fallback
