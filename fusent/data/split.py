"""Train/validation splits: the dataset's own where it gives one, else stratified with a fixed seed."""

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


#: Names datasets use for their validation part (CMU-MOSI's ``mode`` says "valid").
VAL_SPLIT_NAMES = frozenset({"val", "valid", "validation", "dev"})


def given_split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]] | None:
    """The dataset's own train/validation split (``Sample.split``), or None when it gives none.

    Rows of any other split (e.g. ``test``) are in neither part: selection never sees them.
    """
    if not any(s.split for s in samples):
        return None
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split in VAL_SPLIT_NAMES]
    if not train or not val:
        raise ValueError(f"the dataset's own split gives {len(train)} train and {len(val)} validation samples")
    return train, val


def split_samples(
    samples: list[Sample], val_fraction: float = 0.2, seed: int = 13
) -> tuple[list[Sample], list[Sample], dict[str, object]]:
    """The dataset's own split where it has one, else a stratified one; and how it was made (for checkpoints)."""
    own = given_split(samples)
    if own is not None:
        return own[0], own[1], {"given_by_dataset": True}
    train, val = stratified_split(samples, val_fraction, seed)
    return train, val, {"val_fraction": val_fraction, "seed": seed}
