"""Where a result came from, recorded next to it: the fusent version and git commit, the command line, the data
(with a content hash), the split, the seeds and the machine. A table without these cannot be checked or rerun."""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__

#: what ``data_hash`` covers, said wherever the hash is shown
DATA_HASH_COVERS = (
    "sha256 over the sorted (id, label) pairs of the labelled samples and the (relative path, size in bytes) of every "
    "file under the data folder (or the bytes of a manifest file); mtimes are left out, so a copy hashes the same"
)


def git_commit(folder: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the checkout holding ``folder`` (default: this package), with ``+dirty`` when
    tracked files differ; None where there is no git or no checkout (an installed wheel)."""
    cwd = Path(folder or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if status else commit or None


def data_hash(data: str | Path, labelled: Iterable[tuple[str, Any]]) -> str:
    """A content hash of a dataset as ``DATA_HASH_COVERS`` says: cheap (no image is read) yet it changes when a
    label, a sample or a file's size changes."""
    h = hashlib.sha256()
    for sid, label in sorted((str(i), str(v)) for i, v in labelled):
        h.update(f"{sid}\t{label}\n".encode())
    root = Path(data)
    if root.is_file():
        h.update(root.read_bytes())
    elif root.is_dir():
        files = []
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                try:
                    files.append((path.relative_to(root).as_posix(), path.stat().st_size))
                except OSError:
                    continue
        for rel, size in sorted(files):
            h.update(f"{rel}\t{size}\n".encode())
    return h.hexdigest()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(workers: int | None = None) -> dict[str, Any]:
    """CPU model and cores, GPU (if any), torch's intra-op threads, and the versions that change numbers."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if workers is not None:
        info["workers"] = workers
    return info


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed (``sys.argv``), quoted so it can be pasted back into a shell."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = "python -m fusent.cli" if argv[0].endswith(("cli.py", "__main__.py")) else Path(argv[0]).name
    return " ".join([program, *map(shlex.quote, argv[1:])])


def provenance(
    *,
    data: str | Path,
    labelled: Iterable[tuple[str, Any]],
    encoders: dict[str, Any],
    split_file: str | Path | None,
    split_info: dict[str, Any],
    seeds: Sequence[int] | None,
    folds: int | None,
    wall_seconds: float,
    workers: int | None = None,
) -> dict[str, Any]:
    """Everything a reader needs to trust or rerun a table, as one JSON-ready dict."""
    return {
        "fusent_version": __version__,
        "git_commit": git_commit(),
        "command": command_line(),
        "data": str(Path(data).resolve()),
        "data_hash": data_hash(data, labelled),
        "data_hash_covers": DATA_HASH_COVERS,
        "encoders": encoders,
        "split_file": None if split_file is None else str(split_file),
        "split": split_info,
        "seeds": None if seeds is None else list(seeds),
        "folds": folds,
        "machine": machine(workers),
        "wall_seconds": round(wall_seconds, 1),
    }
