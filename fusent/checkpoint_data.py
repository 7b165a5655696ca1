"""The labelled posts a trained checkpoint is scored on: the parts it was trained with (its split.csv), so
``fusent evaluate``, ``fusent robustness`` and anything else that scores a checkpoint read exactly the same posts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import load_dataset
from .data.adapters import RegressionDataWithLabels
from .data.records import DatasetBundle, Sample
from .data.split import split_labelled

SPLITS: tuple[str, ...] = ("test", "val", "all")


class DataMismatch(ValueError):
    """Data a checkpoint cannot be scored on; ``param`` names the command-line option at fault."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def load_for_checkpoint(data: str | Path, model_config: Any, allow_outside: bool = False) -> DatasetBundle:
    """The dataset at ``data``, checked to be of the checkpoint's task (a score model cannot label, nor vice versa);
    ``allow_outside`` lets a manifest name files outside its folder."""
    label_set = model_config.training.get("split", {}).get("label_set")
    labels = model_config.labels or None  # the checkpoint's classes, in its order
    try:
        bundle = load_dataset(data, labels=labels, label_set=label_set, allow_outside=allow_outside)
    except RegressionDataWithLabels:  # a class list cannot apply to a score table: the checkpoint is the wrong kind
        message = f"{data} is a regression dataset but the checkpoint is a {model_config.task} model"
        raise DataMismatch(message, "--data") from None
    if bundle.task != model_config.task:
        message = f"{data} is a {bundle.task} dataset but the checkpoint is a {model_config.task} model"
        raise DataMismatch(message, "--data")
    return bundle


def checkpoint_samples(
    data: str | Path, split: str, model_config: Any, checkpoint: str | Path, allow_outside: bool = False
) -> tuple[list[Sample], list[str], DatasetBundle]:
    """The labelled samples of ``split`` (test / val / all): the parts the checkpoint was trained with (its split.csv,
    else the split recomputed from its recorded settings), or every labelled row; with the label list and bundle."""
    bundle = load_for_checkpoint(data, model_config, allow_outside)
    if split == "all":
        return bundle.labelled, bundle.labels, bundle
    if split not in ("val", "test"):
        raise DataMismatch("--split must be test, val or all", "--split")
    info = model_config.training.get("split", {})
    split_file = Path(checkpoint) / "split.csv"
    if not getattr(model_config, "shared_split", True):  # an ensemble whose members saw different training data
        raise DataMismatch(
            "the ensemble's members were trained on different splits, so no part is unseen by all of them: use "
            "--split all on other data (or ensemble runs trained with one --split-file)",
            "--split",
        )
    if split_file.is_file():
        parts = split_labelled(bundle, split_file=split_file)
    else:  # a checkpoint from before split files: the same seeded draw again
        parts = split_labelled(
            bundle,
            info.get("val_fraction", 0.2),
            info.get("test_fraction", 0.0),
            info.get("seed", 13),
            info.get("limit"),
        )
    chosen = parts.test if split == "test" else parts.val
    if split == "test" and not chosen:
        raise DataMismatch(
            "this checkpoint was trained without a test part (--test-fraction 0); use --split val (optimistic: it "
            "selected the epoch) or --split all on other data",
            "--split",
        )
    return chosen, bundle.labels, bundle
