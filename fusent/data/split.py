"""Train/validation splits: the dataset's own when it gives one, else a seeded (stratified for classes) draw."""

from __future__ import annotations

from collections import Counter

from sklearn.model_selection import train_test_split

from .records import DatasetBundle, Sample


def stratified_split(
    samples: list[Sample], val_fraction: float = 0.2, seed: int = 13, stratify: bool = True
) -> tuple[list[Sample], list[Sample]]:
    """Split keeping class proportions; the same seed always gives the same split. ``stratify=False`` draws a plain
    seeded random split (regression scores have no classes to keep in proportion)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = [s.label for s in samples] if stratify else None
    train, val = train_test_split(samples, test_size=val_fraction, random_state=seed, stratify=labels)
    return list(train), list(val)


def split_labelled(
    bundle: DatasetBundle, val_fraction: float = 0.2, seed: int = 13, limit: int | None = None
) -> tuple[list[Sample], list[Sample]]:
    """``(train, val)`` of the bundle's labelled samples: the dataset's own split when it gives one (its "test" rows
    are in neither: selection never sees them), else a seeded random split, stratified for classification.

    ``limit`` keeps the first N labelled samples before a random split, or the first N of each part of a given one
    (a table sorted by split would otherwise lose its validation rows).
    """
    if bundle.given_split is None:
        samples = bundle.labelled[:limit] if limit else bundle.labelled
        if len(samples) < max(2, 2 * len(bundle.labels)):
            raise ValueError(
                f"{bundle.name}: only {len(samples)} labelled samples; need at least two (per class) to split"
            )
        if bundle.task == "classification":
            _check_class_sizes(samples)
        return stratified_split(samples, val_fraction, seed, stratify=bundle.task == "classification")
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for sample in bundle.labelled:
        parts[bundle.given_split[sample.id]].append(sample)
    train, val = (parts["train"][:limit], parts["val"][:limit]) if limit else (parts["train"], parts["val"])
    if not train or not val:
        raise ValueError(
            f"{bundle.name}: the dataset's own split has {len(train)} train and {len(val)} validation samples; "
            "both must be non-empty"
        )
    return train, val


def _check_class_sizes(samples: list[Sample]) -> None:
    """A class needs a row on each side of the split; a one-row class is most often a mistyped label."""
    counts = Counter(s.label for s in samples)
    rare = [f"{label!r} has {n} labelled row" for label, n in sorted(counts.items()) if n < 2]
    if rare:
        raise ValueError(
            f"{'; '.join(rare)}: a class needs at least 2 rows to be split into train and validation. Fix the label, "
            "or pass --labels a,b,c to train on those classes only (rows with other labels are reported and left out)"
        )
