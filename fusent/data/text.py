"""Robust text decoding for crawled posts with mixed encodings."""

from __future__ import annotations

import ftfy


def decode_bytes(raw: bytes) -> tuple[str, bool]:
    """Decode as UTF-8 (BOM dropped), else Windows-1252, else Latin-1 (which never fails); and whether a fallback
    was needed."""
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding), encoding != "utf-8-sig"
        except UnicodeDecodeError:
            continue
    raise AssertionError("unreachable: latin-1 decodes any bytes")


def clean_text(text: str) -> str:
    """Fix mojibake and curly quotes with ftfy, then collapse whitespace."""
    return " ".join(ftfy.fix_text(text).split())


def decode_text(raw: bytes) -> tuple[str, bool]:
    """Robustly decoded and cleaned text, and whether a fallback encoding was needed."""
    text, fallback = decode_bytes(raw)
    return clean_text(text), fallback
