"""Sample records from dataset adapters; robust decoding of text and images."""

from .adapters import MVSA_LABELS, load_dataset, load_manifest, load_mvsa
from .images import ImageLoadError, load_image
from .memotion import MEMOTION_LABELS, load_memotion
from .mosi import load_mosi
from .records import MODALITIES, DatasetBundle, ProblemReport, Sample, TaskName
from .split import split_labelled, stratified_split
from .text import decode_text

__all__ = [
    "MEMOTION_LABELS",
    "MODALITIES",
    "MVSA_LABELS",
    "DatasetBundle",
    "ImageLoadError",
    "ProblemReport",
    "Sample",
    "TaskName",
    "decode_text",
    "load_dataset",
    "load_image",
    "load_manifest",
    "load_memotion",
    "load_mosi",
    "load_mvsa",
    "split_labelled",
    "stratified_split",
]
