"""RAVDESS speech (Livingstone & Russo 2018): labels, text and speaker split from the file names alone; and a plain
folder of audio files to predict.

``Actor_NN/MM-VV-EE-II-SS-RR-NN.flac``: modality, vocal channel, emotion, intensity, statement, repetition, actor.
The words are one of two fixed neutral sentences, so a text+audio model has to learn that only the voice carries
the label. Samples carry their split (actors 01-16 train, 17-18 validation, 19-20 and any later actor test), so speakers
never straddle train and validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from .audio import AUDIO_SUFFIXES, is_audio_file
from .records import DatasetBundle, ProblemReport, Sample
from .rows import finish_rows
from .video import is_video_file

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
EMOTION_LABELS = list(EMOTIONS.values())
#: The dataset README's 3-class mapping; surprised is ambiguous and left out of the sentiment task.
SENTIMENT = {
    "neutral": "neutral",
    "calm": "neutral",
    "happy": "positive",
    "sad": "negative",
    "angry": "negative",
    "fearful": "negative",
    "disgust": "negative",
}
SENTIMENT_LABELS = ["negative", "neutral", "positive"]
LABEL_SETS = ("sentiment", "emotion")
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
#: speaker-disjoint parts: actors 01-16 train, 17-18 validation, 19-20 (and any later actor) test
TRAIN_ACTORS, VAL_ACTORS = range(1, 17), range(17, 19)
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def parse_name(stem: str) -> dict[str, str] | None:
    """The seven fields of a RAVDESS file name, or None when ``stem`` is not one."""
    match = _NAME.match(stem)
    if match is None:
        return None
    keys = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
    return dict(zip(keys, match.groups(), strict=True))


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if is_audio_file(p))


def is_ravdess_folder(path: Path) -> bool:
    return any(parse_name(p.stem) for actor in path.glob("Actor_*") for p in actor.iterdir() if is_audio_file(p))


def actor_split(actor: int) -> str:
    return "train" if actor in TRAIN_ACTORS else "val" if actor in VAL_ACTORS else "test"


def load_ravdess(
    root: str | Path, labels: list[str] | None = None, label_set: str | None = None, with_text: bool = True
) -> DatasetBundle:
    """RAVDESS speech with ``label_set`` ``sentiment`` (3 classes, surprised left out and counted in the notes) or
    ``emotion`` (8 classes). Given only ``labels`` (a checkpoint's), the label set is the one they belong to.
    ``with_text`` adds the spoken sentence as the text modality."""
    root = Path(root)
    if label_set is None:
        label_set = "emotion" if labels and not set(labels) <= set(SENTIMENT_LABELS) else "sentiment"
    if label_set not in LABEL_SETS:
        raise ValueError(f"RAVDESS label set must be one of {LABEL_SETS}, got {label_set!r}")
    report = ProblemReport()

    def rows() -> Iterable[tuple[Sample, bool]]:
        for path in _audio_files(root):
            fields = parse_name(path.stem)
            if fields is None or fields["emotion"] not in EMOTIONS or fields["statement"] not in STATEMENTS:
                report.add("bad_file_name", path.stem, f"not a RAVDESS file name (MM-VV-EE-II-SS-RR-NN): {path}")
                continue
            emotion = EMOTIONS[fields["emotion"]]
            label = emotion if label_set == "emotion" else SENTIMENT.get(emotion)
            if label is None:
                report.note(f"ravdess_{emotion}_excluded")
                continue
            text = STATEMENTS[fields["statement"]] if with_text else None
            splits[path.stem] = actor_split(int(fields["actor"]))
            yield Sample(id=path.stem, text=text, audio=path, label=label, group=f"actor{fields['actor']}"), True

    splits: dict[str, str] = {}
    chosen = labels or (EMOTION_LABELS if label_set == "emotion" else SENTIMENT_LABELS)
    bundle = finish_rows(rows(), chosen, report, name=f"{root.name}-{label_set}")
    bundle.given_split = {s.id: splits[s.id] for s in bundle.labelled}  # speakers never cross the split
    bundle.prediction_header = "id,label"
    return bundle


def load_audio_folder(root: str | Path, labels: list[str] | None = None) -> DatasetBundle:
    """Every audio file (a voice note; ``AUDIO_SUFFIXES``) or video clip (``VIDEO_SUFFIXES``) under ``root``,
    recursively, is one sample to predict, its id the path relative to ``root`` without the suffix."""
    root = Path(root)
    report = ProblemReport()
    files = sorted(p for p in root.rglob("*") if is_audio_file(p) or is_video_file(p))
    if not files:
        raise FileNotFoundError(f"no audio ({', '.join(AUDIO_SUFFIXES)}) or video files under {root}")

    def sample(p: Path) -> Sample:
        media = {"video": p} if is_video_file(p) else {"audio": p}
        return Sample(id=p.relative_to(root).with_suffix("").as_posix(), **media)

    rows = ((sample(p), False) for p in files)
    bundle = finish_rows(rows, labels or [], report, name=root.name)
    bundle.prediction_header = "id,label"
    return bundle
