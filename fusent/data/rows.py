"""Rows an adapter read, as ``(sample, is_labelled)`` pairs, checked into a ``DatasetBundle``: ids unique per
section, labels one of the classes (spelled one way), and every row left out reported, never dropped silently.
Every dataset adapter ends here, so this module imports none of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from .records import MODALITIES, DatasetBundle, ProblemReport, Sample, TaskName


def finish_rows(
    rows: Iterable[tuple[Sample, bool]],
    labels: list[str] | None,
    report: ProblemReport,
    name: str,
    task: TaskName = "classification",
) -> DatasetBundle:
    """Check ids and labels for a stream of (sample, is_labelled) rows, never dropping one silently.

    For regression, a labelled row whose score is None was rejected (and reported) by its adapter: not trained on.
    """
    rows = list(rows)
    if task == "regression":
        labels = []
    else:
        labels = canonical_labels(labels, [s.label for s, lab in rows if lab and s.label])
        spelled = {label_key(label): label for label in labels}
        for sample, is_labelled in rows:
            if is_labelled and sample.label is not None:
                sample.label = spelled.get(label_key(sample.label), sample.label)
    seen: dict[bool, set[str]] = {True: set(), False: set()}  # per section: an id may be both labelled and asked
    labelled: list[Sample] = []
    unlabelled: list[Sample] = []
    for sample, is_labelled in rows:
        if check_row(sample, is_labelled, labels, report, seen[is_labelled], task):
            (labelled if is_labelled else unlabelled).append(sample)
    return DatasetBundle(
        labelled=labelled, unlabelled=unlabelled, labels=list(labels), report=report, name=name, task=task
    )


def label_key(label: str) -> str:
    """What makes two spellings of a label the same class: case and whitespace do not count."""
    return " ".join(str(label).split()).casefold()


def canonical_labels(given: list[str] | None, seen: list[str]) -> list[str]:
    """The class names: ``given`` as given (refused when two differ only in case or spacing), else one per label
    seen, spelled as most rows spell it ('Positive ' and 'POSITIVE' join 'positive'), sorted."""
    if given is not None:
        keys: dict[str, str] = {}
        for label in given:
            if label_key(label) in keys:
                raise ValueError(f"labels {keys[label_key(label)]!r} and {label!r} are the same class; name it once")
            keys[label_key(label)] = label
        return list(given)
    spellings: dict[str, Counter[str]] = {}
    for label in seen:
        spellings.setdefault(label_key(label), Counter())[" ".join(label.split())] += 1
    return sorted(counts.most_common(1)[0][0] for counts in spellings.values())


class IdSet(Protocol):
    """What ``check_row`` needs of the ids seen so far: a set, or ``fusent.stream.SeenIds`` for huge manifests."""

    def __contains__(self, sample_id: object) -> bool: ...

    def add(self, sample_id: str) -> None: ...


def check_row(
    sample: Sample,
    is_labelled: bool,
    labels: list[str],
    report: ProblemReport,
    seen: IdSet,
    task: TaskName = "classification",
) -> bool:
    """Whether one row is kept (its id first seen, a known label or a score when labelled); what is wrong is
    reported. A row to predict has its label and score cleared. ``seen`` collects the ids kept so far."""
    if sample.id in seen:
        report.add("duplicate_id", sample.id, "id appears more than once; keeping the first row")
        return False
    seen.add(sample.id)
    if all(getattr(sample, m) is None for m in MODALITIES) and getattr(sample, "video", None) is None:
        report.add("no_modality", sample.id, f"none of {', '.join(MODALITIES)} given")
    if not is_labelled:
        sample.label, sample.score = None, None
        return True
    if task == "regression":
        return sample.score is not None
    if sample.label not in labels:
        report.add("unknown_label", sample.id, f"label {sample.label!r} is not one of {labels}; not trained on")
        return False
    return True
