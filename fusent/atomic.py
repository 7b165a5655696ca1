"""Atomic file writes: a file is either its old self or the whole new one, never half written.

Every write goes to a temporary file in the same folder, which is renamed over the target once complete
(``os.replace`` is atomic on POSIX and Windows). A crash or Ctrl-C mid-write leaves the old file (or none) and no
temporary file behind, so a cache entry or a run's ``metrics.json`` never fails to parse later.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (for writers that take a file name, like safetensors');
    renamed over ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (text as UTF-8, bytes, or a function writing to the open binary file) to ``path`` atomically."""
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
