"""Train / validation / test splits and k-fold cross-validation folds of a dataset's labelled samples.

Validation alone selects (epochs, heads, settings); the test part is scored once, at the end. A split is drawn
stratified for classes (seeded), grouped where samples carry a ``group`` (a speaker, a video: never on both sides),
taken from the dataset's own split when it gives one, or read back from a split file so two runs, heads or tools
score exactly the same posts.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from ..atomic import atomic_write
from ..options import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from .records import DatasetBundle, Sample

PARTS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Split:
    """One train / validation / test assignment; ``info`` says how it was made (saved with checkpoints)."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    info: dict[str, Any] = field(default_factory=dict)

    def parts(self) -> dict[str, list[Sample]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def assignment(self) -> dict[str, str]:
        """id -> part, in train, val, test order."""
        return {s.id: part for part, samples in self.parts().items() for s in samples}

    def sizes(self) -> dict[str, int]:
        return {f"n_{part}": len(samples) for part, samples in self.parts().items()}


def _groups(samples: Sequence[Sample]) -> list[str] | None:
    """Each sample's group when every sample has one (else None: a plain, sample-level split)."""
    groups = [s.group for s in samples]
    return None if any(g is None for g in groups) else [str(g) for g in groups]


def hold_out(
    samples: Sequence[Sample], fraction: float, seed: int, stratify: bool, count: int | None = None
) -> tuple[list[Sample], list[Sample]]:
    """``(rest, held)`` with about ``fraction`` of the samples held (exactly ``count`` when given and samples are
    not grouped): whole groups when samples have groups, else stratified by label for classification (plain random
    for scores)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"a held-out fraction must be in (0, 1), got {fraction}")
    groups = _groups(samples)
    if groups is not None:
        if len(set(groups)) < 2:
            raise ValueError("cannot hold out whole groups: every sample is in the same group")
        rest, held = next(GroupShuffleSplit(1, test_size=fraction, random_state=seed).split(samples, groups=groups))
        return [samples[i] for i in rest], [samples[i] for i in held]
    labels = [s.label for s in samples] if stratify else None
    if count is not None and labels is not None:  # every class needs a held-out sample to stratify
        count = max(count, len(set(labels)))
    size = count if count is not None and 0 < count < len(samples) else fraction
    rest, held = train_test_split(list(samples), test_size=size, random_state=seed, stratify=labels)
    return list(rest), list(held)


def stratified_split(
    samples: list[Sample], val_fraction: float = 0.2, seed: int = 13, stratify: bool = True
) -> tuple[list[Sample], list[Sample]]:
    """A two-way ``(train, val)`` split keeping class proportions; the same seed always gives the same split."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    return hold_out(samples, val_fraction, seed, stratify)


def three_way(
    samples: Sequence[Sample], val_fraction: float, test_fraction: float, seed: int, stratify: bool
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Test drawn first, then validation from the rest, so the fractions are of the whole; ``test_fraction=0``
    leaves no test part (every figure is then a validation figure)."""
    if test_fraction < 0 or val_fraction <= 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"need val_fraction > 0, test_fraction >= 0 and their sum < 1; got {val_fraction} and {test_fraction}"
        )
    n = len(samples)  # sizes rounded from the whole, so 10% / 10% of 3,199 posts are 320 / 320
    if test_fraction == 0:
        rest, test = list(samples), []
    else:
        rest, test = hold_out(samples, test_fraction, seed, stratify, round(test_fraction * n))
    train, val = hold_out(rest, val_fraction / (1 - test_fraction), seed, stratify, round(val_fraction * n))
    return train, val, test


def _check_size(bundle: DatasetBundle, samples: Sequence[Sample], parts: int) -> None:
    if len(samples) < max(parts, parts * len(bundle.labels)):
        raise ValueError(
            f"{bundle.name}: only {len(samples)} labelled samples; need at least {parts} (per class) to split into "
            f"{parts} parts"
        )


def split_labelled(
    bundle: DatasetBundle,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 13,
    limit: int | None = None,
    split_file: str | Path | None = None,
) -> Split:
    """The bundle's labelled samples in train / validation / test.

    In order of precedence: a ``split_file`` (``id,part`` rows, as ``write_split_file`` writes); the dataset's own
    split (RAVDESS actors, a CMU-MOSI ``mode`` column); else a seeded three-way draw, stratified for classification.
    When the dataset's own split has no labelled test rows (CMU-MOSI here: its test labels are kept elsewhere) and
    ``test_fraction > 0``, its validation rows become the test part and validation is drawn from its training rows
    (whole videos where ids carry them): the rows that then select nothing are the ones that were the dataset's
    validation set. ``limit`` keeps the first N labelled samples before a random split, or the first N of each part
    of a given one.
    """
    stratify = bundle.task == "classification"
    if split_file is not None:
        return _from_file(bundle, split_file)
    if bundle.given_split is None:
        samples = bundle.labelled[:limit] if limit else bundle.labelled
        _check_size(bundle, samples, 3 if test_fraction > 0 else 2)
        if stratify:
            _check_class_sizes(samples, 3 if test_fraction > 0 else 2)
        train, val, test = three_way(samples, val_fraction, test_fraction, seed, stratify)
        info = {"kind": "random", "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}
        return Split(train, val, test, info)
    given: dict[str, list[Sample]] = {part: [] for part in PARTS}
    for sample in bundle.labelled:
        given[bundle.given_split[sample.id]].append(sample)
    if limit:
        given = {part: samples[:limit] for part, samples in given.items()}
    info: dict[str, Any] = {"kind": "given"}
    if not given["test"] and test_fraction > 0 and given["val"]:
        train, val = hold_out(given["train"], val_fraction / (1 - test_fraction), seed, stratify)
        given = {"train": train, "val": val, "test": given["val"]}
        info = {"kind": "given", "test": "the dataset's validation rows", "val_fraction": val_fraction, "seed": seed}
    if not given["train"] or not given["val"]:
        raise ValueError(
            f"{bundle.name}: the dataset's own split has {len(given['train'])} train and {len(given['val'])} "
            "validation samples; both must be non-empty"
        )
    return Split(given["train"], given["val"], given["test"], info)


def cv_splits(
    bundle: DatasetBundle,
    k: int,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 13,
    limit: int | None = None,
) -> list[Split]:
    """``k`` folds over every labelled sample: fold i is the test part of split i, and a validation part (about
    ``val_fraction`` of the whole) is drawn from the other folds for early stopping. Stratified for classes,
    grouped by ``Sample.group`` (speaker, video) where every sample has one, so a group is never on both sides."""
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    samples = bundle.labelled[:limit] if limit else bundle.labelled
    _check_size(bundle, samples, k)
    stratify, groups = bundle.task == "classification", _groups(samples)
    y = [s.label for s in samples] if stratify else None
    if groups is not None:
        if len(set(groups)) < k:
            raise ValueError(f"{bundle.name}: {len(set(groups))} groups cannot fill {k} group-disjoint folds")
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if stratify else GroupKFold(k)
        folds = splitter.split(samples, y, groups)
    else:
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if stratify else KFold(k, True, seed)
        folds = splitter.split(samples, y)
    splits = []
    for fold, (rest, held) in enumerate(folds):
        train, val = hold_out([samples[i] for i in rest], val_fraction * k / (k - 1), seed + fold, stratify)
        info = {"kind": "cv", "folds": k, "fold": fold, "val_fraction": val_fraction, "seed": seed}
        splits.append(Split(train, val, [samples[i] for i in held], info))
    return splits


def write_split_file(path: str | Path, splits: Split | Sequence[Split]) -> Path:
    """``id,part`` rows (train, val, test), or ``id,fold,part`` rows for cross-validation folds."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if isinstance(splits, Split):
        writer.writerow(["id", "part"])
        writer.writerows(splits.assignment().items())
    else:
        writer.writerow(["id", "fold", "part"])
        for fold, split in enumerate(splits):
            writer.writerows((sid, fold, part) for sid, part in split.assignment().items())
    return atomic_write(path, text.getvalue())


def read_split_file(path: str | Path) -> list[dict[str, str]]:
    """One id -> part mapping per fold (a single one for an ``id,part`` file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found (fusent train writes split.csv in its run folder)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"id", "part"} <= set(rows[0]):
        raise ValueError(f"{path}: a split file needs the columns id,part (or id,fold,part)")
    bad = sorted({r["part"] for r in rows} - set(PARTS))
    if bad:
        raise ValueError(f"{path}: unknown part(s) {', '.join(bad)}; use {', '.join(PARTS)}")
    folds: dict[str, dict[str, str]] = {}
    for row in rows:
        folds.setdefault(row.get("fold") or "0", {})[row["id"]] = row["part"]
    return [folds[f] for f in sorted(folds, key=lambda f: int(f) if f.isdigit() else f)]


def _apply(bundle: DatasetBundle, assignment: dict[str, str], info: dict[str, Any]) -> Split:
    parts: dict[str, list[Sample]] = {part: [] for part in PARTS}
    unassigned = []
    for sample in bundle.labelled:
        part = assignment.get(sample.id)
        (parts[part] if part else unassigned).append(sample)
    missing = len(set(assignment) - {s.id for s in bundle.labelled})
    if missing:
        raise ValueError(
            f"{info.get('file')}: {missing} ids of the split file are not labelled samples of {bundle.name}; "
            "was it written for other data?"
        )
    for sample in unassigned:  # reported, never silently trained or scored on
        bundle.report.add("not_in_split_file", sample.id, "labelled sample not in the split file; left out")
    if not parts["train"] or not parts["val"]:
        raise ValueError(f"{info.get('file')}: the split needs train and val rows")
    return Split(parts["train"], parts["val"], parts["test"], info)


def _from_file(bundle: DatasetBundle, path: str | Path) -> Split:
    folds = read_split_file(path)
    if len(folds) != 1:
        raise ValueError(f"{path} holds {len(folds)} cross-validation folds; use it with --cv {len(folds)}")
    return _apply(bundle, folds[0], {"kind": "file", "file": str(path)})


def cv_from_file(bundle: DatasetBundle, path: str | Path) -> list[Split]:
    """The folds of an ``id,fold,part`` file written by a cross-validated run."""
    folds = read_split_file(path)
    return [
        _apply(bundle, fold, {"kind": "cv", "folds": len(folds), "fold": i, "file": str(path)})
        for i, fold in enumerate(folds)
    ]


def _check_class_sizes(samples: Sequence[Sample], parts: int) -> None:
    """A class needs a row in each part of the split; a one-row class is most often a mistyped label."""
    counts = Counter(s.label for s in samples)
    rare = [f"{label!r} has {n} labelled row" for label, n in sorted(counts.items()) if n < parts]
    if rare:
        raise ValueError(
            f"{'; '.join(rare)}: a class needs at least {parts} rows to be split into {parts} parts. Fix the label, "
            "or pass --labels a,b,c to train on those classes only (rows with other labels are reported and left out)"
        )


__all__ = [
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VAL_FRACTION",
    "PARTS",
    "Split",
    "cv_from_file",
    "cv_splits",
    "hold_out",
    "read_split_file",
    "split_labelled",
    "stratified_split",
    "three_way",
    "write_split_file",
]
