"""Stratified train/validation split with a fixed seed."""

from __future__ import annotations

from sklearn.model_selection import train_test_split

from .records import Sample


def stratified_split(
    samples: list[Sample], val_fraction: float = 0.2, seed: int = 13
) -> tuple[list[Sample], list[Sample]]:
    """Split keeping class proportions; the same seed always gives the same split."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = [s.label for s in samples]
    train, val = train_test_split(samples, test_size=val_fraction, random_state=seed, stratify=labels)
    return list(train), list(val)
