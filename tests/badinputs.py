"""The bad-input corpus: hostile or malformed inputs, generated here (nothing is checked in), that the data, predictor
and service tests feed to fusent. Each must end in a per-sample problem report or a one-line error, never a
traceback, a 5xx or unbounded memory.

``CORPUS`` lists every entry by name, so tests can assert they cover all of it and reports can count it.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000


# ------------------------------------------------------------------------------------------------------ images


def png_bytes(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid RGB PNG of any size, written by hand so even a 1 x 40000 image is ~100 bytes and costs nothing to
    build (every row is the same, so zlib squeezes it)."""
    row = b"\x00" + bytes(colour) * width  # filter byte 0, then the pixels
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def tall_png() -> bytes:
    """1 x 8000: resizing the shorter side up to the encoder's size used to cost ~2 GB."""
    return png_bytes(1, 8000)


def very_tall_png() -> bytes:
    """1 x 40000: used to end in a MemoryError (a 500 in the service)."""
    return png_bytes(1, 40000)


def wide_png() -> bytes:
    return png_bytes(40000, 1)


# ------------------------------------------------------------------------------------------------------- audio


def wav_bytes(wave: np.ndarray, sr: int = SR, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


def tone(seconds: float, freq: float = 220.0, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def silent_wav() -> bytes:
    return wav_bytes(np.zeros(SR // 2, dtype=np.float32))


def clipped_wav() -> bytes:
    return wav_bytes(np.clip(tone(0.5, amp=3.0), -1.0, 1.0))


def write_long_flac(path: Path, seconds: float, sr: int = SR) -> Path:
    """A FLAC of ``seconds`` (minutes in the tests), written block by block so building it needs no memory: a quiet
    tone, which FLAC compresses to a few hundred KB however long it is (the issue's was 673 KB for an hour)."""
    block = tone(1.0, sr=sr, amp=0.1)
    with sf.SoundFile(path, "w", samplerate=sr, channels=1, format="FLAC") as fh:
        for _ in range(int(seconds)):
            fh.write(block)
    return path


# ---------------------------------------------------------------------------------------------------- manifests


def long_field_csv(root: Path, size: int = 200_000) -> Path:
    """A CSV whose text cell is over the csv module's 128 KB field limit, between two good rows."""
    path = root / "long_field.csv"
    path.write_text(f"id,text,label\n1,good,positive\n2,{'w' * size},negative\n3,bad,negative\n", encoding="utf-8")
    return path


def cp1252_csv(root: Path) -> Path:
    """Windows-1252 bytes (é, curly quotes) that are not valid UTF-8."""
    path = root / "cp1252.csv"
    path.write_bytes("id,text,label\n1,café \u201cgood\u201d,positive\n2,bad,negative\n".encode("cp1252"))
    return path


def non_object_jsonl(root: Path) -> Path:
    """JSONL whose lines are valid JSON but not all objects (a list, a number, a string)."""
    path = root / "mixed.jsonl"
    lines = ['{"id": "1", "text": "good", "label": "positive"}', '["2", "bad"]', "7", '"text"']
    lines.append('{"id": "3", "text": "bad", "label": "negative"}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def first_line_not_object_jsonl(root: Path) -> Path:
    path = root / "first_bad.jsonl"
    path.write_text('[1, 2]\n{"id": "1", "text": "good", "label": "positive"}\n', encoding="utf-8")
    return path


def cased_labels_csv(root: Path, rows: int = 4) -> Path:
    """The same three classes written as 'positive', 'Positive ', ' NEGATIVE', 'neutral'..., and one 'angry' row (a
    label outside the set)."""
    path = root / "cased.csv"
    spellings = {"positive": ["positive", "Positive ", "POSITIVE"], "negative": ["negative", " NEGATIVE", "Negative"]}
    spellings["neutral"] = ["neutral", "Neutral", " neutral"]
    lines = ["id,text,label"]
    for label, forms in spellings.items():
        for k in range(rows):
            lines.append(f"{label}{k},{label} words,{forms[k % len(forms)]}")
    lines.append("angry0,grr,angry")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def traversal_manifest(root: Path) -> Path:
    """Image paths escaping the manifest's folder: ``../../etc/passwd``, an absolute path, and a good one."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images" / "ok.png").write_bytes(png_bytes(8, 8))
    path = root / "manifest.csv"
    rows = ["id,text,image,label", "1,good,images/ok.png,positive", "2,bad,../../etc/passwd,negative"]
    rows += ["3,bad,/etc/passwd,negative", "4,good,images/../../outside.png,positive"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------ service


def empty_upload() -> bytes:
    """A 0-byte file chosen in a multipart form (with a file name: not the browser's "nothing chosen")."""
    return b""


#: name -> builder. Builders without arguments return bytes; the others take a folder and return a file's path.
CORPUS: dict[str, Callable[..., object]] = {
    "png_1x8000": tall_png,
    "png_1x40000": very_tall_png,
    "png_40000x1": wide_png,
    "wav_silent": silent_wav,
    "wav_clipped": clipped_wav,
    "flac_minutes_long": lambda root: write_long_flac(root / "long.flac", 180),
    "csv_field_over_128kb": long_field_csv,
    "csv_cp1252": cp1252_csv,
    "jsonl_line_not_object": non_object_jsonl,
    "jsonl_first_line_not_object": first_line_not_object_jsonl,
    "labels_cased_and_unknown": cased_labels_csv,
    "manifest_path_traversal": traversal_manifest,
    "upload_zero_bytes": empty_upload,
}
