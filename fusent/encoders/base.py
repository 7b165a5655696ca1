"""The small interface every encoder meets: raw batch in, per-sample states and pooled vectors out."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch


class Encoder(ABC):
    """``encode`` returns one ``[L_i, D]`` state matrix per sample (unpadded) and a ``[B, D]`` pooled tensor."""

    modality: str
    dim: int

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the features: model identity and preprocessing. Saved in checkpoints."""

    @abstractmethod
    def encode(self, items: list[Any]) -> tuple[list[torch.Tensor], torch.Tensor]: ...

    def cache_key(self) -> str:
        blob = json.dumps({"modality": self.modality, **self.settings(), "weights": self.fingerprint()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def fingerprint(self) -> str:
        return ""


def folder_fingerprint(path: str | Path) -> str:
    """Identity of a local model folder: file names, sizes and mtimes (cheap, changes when weights do)."""
    path = Path(path)
    if not path.exists():
        return ""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    items = [(str(p.relative_to(path.parent)), p.stat().st_size, int(p.stat().st_mtime)) for p in files]
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
