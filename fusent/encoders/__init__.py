"""Text, image and audio encoders behind one interface (see ``base.Encoder``)."""

from .audio import (
    DEFAULT_AUDIO_SECONDS,
    LSTMCNN,
    STFTCNN,
    AudioFeatureEncoder,
    HFAudioEncoder,
    WhisperCT2Encoder,
    create_audio_encoder,
)
from .base import Encoder, TrainableEncoder, create_trainable, trainable_names
from .image import DEFAULT_IMAGE_MODEL, EfficientNetLiteEncoder, HFImageEncoder, MirroredImages, create_image_encoder
from .image_finetune import FineTunedImageEncoder
from .inception import InceptionSAEncoder
from .text import DEFAULT_TEXT_MODEL, POOLINGS, TextEncoder, resolve_text_model

__all__ = [
    "DEFAULT_AUDIO_SECONDS",
    "LSTMCNN",
    "STFTCNN",
    "AudioFeatureEncoder",
    "HFAudioEncoder",
    "WhisperCT2Encoder",
    "create_audio_encoder",
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_TEXT_MODEL",
    "POOLINGS",
    "EfficientNetLiteEncoder",
    "FineTunedImageEncoder",
    "MirroredImages",
    "Encoder",
    "HFImageEncoder",
    "InceptionSAEncoder",
    "TextEncoder",
    "TrainableEncoder",
    "create_image_encoder",
    "create_trainable",
    "resolve_text_model",
    "trainable_names",
]
