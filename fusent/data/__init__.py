"""Sample records from dataset adapters; robust decoding of text, images and audio."""

from .adapters import MVSA_LABELS, load_dataset, load_manifest, load_mvsa
from .audio import AudioLoadError, load_audio
from .images import ImageLoadError, load_image
from .loading import Decoded, LoadError
from .memotion import MEMOTION_LABELS, load_memotion
from .mosi import load_mosi
from .ravdess import load_audio_folder, load_ravdess
from .records import MODALITIES, DatasetBundle, ProblemReport, Sample, TaskName
from .split import split_labelled, stratified_split
from .text import decode_text

__all__ = [
    "AudioLoadError",
    "Decoded",
    "LoadError",
    "load_audio",
    "load_audio_folder",
    "load_ravdess",
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
