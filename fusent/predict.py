"""A Predictor loaded from a checkpoint: the model plus the frozen encoders it was trained on.

``predict(text=, image=, audio=, video=)`` answers one post in the shape Hugging Face pipelines use, with how much
each modality contributed (and, with ``--asr``, what was said); ``predict_batch`` answers many; ``predict_samples``
runs whole datasets through the cache.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .accel import autocast
from .data import ImageLoadError, ProblemReport, Sample, load_image
from .data.audio import SAMPLE_RATE
from .data.images import MAX_IMAGE_PIXELS
from .data.records import MODALITIES
from .data.text import clean_text, decode_text
from .data.video import VideoFrames, VideoLoadError, VideoSettings, VideoSoundtrack, VideoSource, probe, with_video
from .encoders.base import Encoder, pick_device
from .encoders.build import build_encoders
from .encoders.image import MirroredImages
from .encoders.runtime import Int8TextEncoder, OnnxImageEncoder
from .features import FeatureCache, FeatureTable, ModalityBatch, ModalityFeatures, encode_modality
from .model import FusentModel, predict_logits
from .options import Precision, choice
from .tasks import get_task


class InputError(ValueError):
    """A post the model cannot take: ``kind`` names the problem (e.g. ``corrupt_image``, ``no_input``,
    ``unsupported_modality``), ``field`` the input it is about; the REST service answers it with a 4xx."""

    def __init__(self, kind: str, message: str, field: str | None = None):
        super().__init__(message)
        self.kind, self.field = kind, field


class Prediction(list):
    """``[{"label": ..., "score": ...}, ...]`` sorted by score, exactly a Hugging Face pipeline's answer, plus
    ``contributions``: modality -> its signed share of the decision, for the modalities given, and how they were
    measured. ``"learned_weights"``: the head's own modality weights renormalised over the modalities the post has
    (each >= 0, summing to 1). ``"masking"``: how much the top label's probability (the score, for regression)
    falls when that modality alone is hidden; positive = it argued for the answer, negative = against it. Masking
    shares need not sum to 1, nor to the score: modalities interact."""

    def __init__(
        self,
        scores: list[dict[str, Any]],
        contributions: dict[str, float],
        contribution_method: str,
        warnings: list[dict[str, str]] | None = None,
        transcript: str | None = None,
    ):
        super().__init__(scores)
        self.contributions, self.contribution_method = contributions, contribution_method
        #: what was wrong with an input but tolerated, as at training time (e.g. silent audio): ``{"kind", "detail"}``
        self.warnings = warnings or []
        self.transcript = transcript  # what --asr heard in the post's audio (None: not transcribed)

    def top(self, k: int | None) -> Prediction:
        """The best ``k`` labels (None or more than there are: all), keeping contributions and warnings."""
        if k is None or k >= len(self):
            return self
        if k < 1:
            raise ValueError(f"top_k must be >= 1 or None (all labels); got {k}")
        return Prediction(list(self)[:k], self.contributions, self.contribution_method, self.warnings, self.transcript)

    @property
    def label(self) -> str | None:
        return self[0].get("label")  # None for a regression checkpoint (its answer is a score)

    @property
    def score(self) -> float:
        return self[0]["score"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "scores": list(self),
            "contributions": self.contributions,
            "contribution_method": self.contribution_method,
            "warnings": self.warnings,
            "transcript": self.transcript,
        }


def to_image(item: Any, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """A decoded RGB image from a path, encoded bytes, a PIL image or a uint8 / [0, 1] float numpy array
    (HxW or HxWxC); ImageLoadError (a ValueError) says what is wrong otherwise."""
    if isinstance(item, np.ndarray):
        array = item
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating) or array.size == 0 or array.min() < 0 or array.max() > 1:
                raise ImageLoadError("corrupt_image", "a numpy image must be uint8, or float with values in [0, 1]")
            array = (array * 255).round().astype(np.uint8)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ImageLoadError("corrupt_image", f"a numpy image must be HxW or HxWx3/4, got shape {array.shape}")
        return load_image(Image.fromarray(array), max_pixels=max_pixels)
    if isinstance(item, bytearray | memoryview):
        item = bytes(item)
    if not isinstance(item, str | Path | bytes | Image.Image):
        raise ImageLoadError("corrupt_image", f"cannot read an image from a {type(item).__name__}")
    return load_image(Path(item) if isinstance(item, str) else item, max_pixels=max_pixels)


def frozen_encoder(
    modality: str,
    config: dict[str, Any],
    device: str | None = None,
    quantize_text: bool = False,
    onnx: bool = False,
    shared: dict[str, Encoder] | None = None,
    precision: str = "auto",
) -> Encoder:
    """The frozen encoder a checkpoint names for ``modality`` (with the CPU speed option that applies to it), taken
    from ``shared`` when an earlier model built the same one: ensemble members on one encoder load it once."""
    quantize, onnx = quantize_text and modality == "text", onnx and modality == "image"
    key = json.dumps([modality, config, str(device), quantize, onnx, precision], sort_keys=True, default=str)
    if shared is not None and key in shared:
        return shared[key]
    none = {"name": "none"}
    configs = {"text": none, "image": none, "audio": None, modality: config}
    if modality == "text":
        configs["text"] = {**config, "finetune_layers": 0}
    encoder = build_encoders(configs["text"], configs["image"], device, configs["audio"], precision)[0][modality]
    assert encoder is not None
    if quantize:
        encoder = Int8TextEncoder(encoder)
    if onnx:
        encoder = OnnxImageEncoder(encoder)
    if shared is not None:
        shared[key] = encoder
    return encoder


class FeatureMemo:
    """The features of one list of samples, by encoder input and view: what several ensemble members (or the two
    views of test-time augmentation) read in common is encoded once. A modality's data problems are reported by
    its first encoder only, so each broken input counts once."""

    def __init__(
        self,
        samples: Sequence[Sample],
        cache: FeatureCache | None,
        report: ProblemReport,
        progress: bool = True,
        batch_size: int = 32,
    ):
        self.samples, self.cache, self.report, self.progress = samples, cache, report, progress
        self.batch_size = batch_size
        self.ids, self.texts = [s.id for s in samples], [s.text for s in samples]
        self.done: dict[tuple[str, str, bool], ModalityFeatures] = {}
        self.reported: set[str] = set()

    def get(self, encoder: Encoder, keep_states: bool, mirrored: bool = False) -> ModalityFeatures:
        """``encoder``'s features (of horizontally mirrored images when ``mirrored``); states only when kept."""
        keep = keep_states or encoder.trainable  # a trainable encoder's states are its input
        key = (encoder.modality, encoder.cache_key(), mirrored)
        found = self.done.get(key)
        if found is None or (keep and found.states is None):
            first = encoder.modality not in self.reported and not mirrored
            self.reported.add(encoder.modality)
            found = encode_modality(
                self.samples,
                MirroredImages(encoder) if mirrored else encoder,
                self.cache,
                self.report if first else ProblemReport(),
                batch_size=self.batch_size,
                progress=self.progress,
                keep_states=keep,
            )
            self.done[key] = found
        return found if keep or found.states is None else found.pooled_only()

    def table(self, modalities: dict[str, ModalityFeatures]) -> FeatureTable:
        return FeatureTable(ids=self.ids, modalities=modalities, texts=self.texts)


@dataclass
class Decision:
    """What a model answers for a batch of posts, before it is formatted: ``values`` are calibrated probabilities
    ``[B, C]`` (scores ``[B, 1]`` for regression); contributions and presence by modality, ``[B]`` each."""

    values: torch.Tensor
    contributions: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    method: str


class Predictor:
    """``predict(text=..., image=...)`` for one post, ``predict_batch`` for several, ``predict_samples`` for a
    dataset (through the feature cache). Only the modalities the fusion head reads get an encoder."""

    def __init__(
        self,
        model: FusentModel,
        cache: FeatureCache | None = None,
        device: str | None = None,
        quantize_text: bool = False,
        onnx: bool = False,
        asr: str | None = None,
        precision: str | None = None,
        *,
        tta: bool = False,
        shared_encoders: dict[str, Encoder] | None = None,
    ):
        """``quantize_text``: int8 dynamic quantisation of a frozen text encoder; ``onnx``: the EfficientNet-Lite
        image encoder through ONNX Runtime. Both are CPU speed options that change the scores slightly. ``asr``
        overrides the checkpoint's transcript mode (off / fill / append), ``precision`` its precision (auto / fp32).
        ``tta``: test-time augmentation, the logits of each post averaged with those of its horizontally mirrored
        image. ``shared_encoders``: frozen encoders by configuration, filled and reused across predictors
        (ensembles)."""
        self.model = model.to(pick_device(device)).eval()
        cfg = model.config
        if precision is not None:
            cfg.precision = choice(Precision, precision, "precision").value
        self.modalities = [m for m in MODALITIES if m in model.head.uses]
        self.encoders: dict[str, Encoder | None] = {}
        for m in self.modalities:
            if m == "text" and cfg.finetune_text:
                self.encoders[m] = None  # the model encodes text itself
            elif m in model.encoders:  # trained with the head: its parameter-free preprocessing feeds the model
                self.encoders[m] = model.encoders[m]
            elif cfg.encoder_settings(m):
                self.encoders[m] = frozen_encoder(
                    m, cfg.encoder_settings(m), device, quantize_text, onnx, shared_encoders, cfg.precision
                )
        if onnx and self.encoders.get("image") is not None and not isinstance(self.encoders["image"], OnnxImageEncoder):
            raise ValueError(
                "ONNX Runtime runs a frozen packaged EfficientNet-Lite; this model trains its image encoder"
            )
        self.runtime = {
            "quantize_text": isinstance(self.encoders.get("text"), Int8TextEncoder),
            "onnx_image": isinstance(self.encoders.get("image"), OnnxImageEncoder),
            "tta": tta,
        }
        self.tta = tta
        self.labels, self.task = cfg.labels, get_task(cfg.task)
        self.cache = cache
        #: posts (``predict``, ``predict_batch``, calls) go through the feature cache only when asked: else every
        #: request would add files to it. Datasets (``predict_samples``, ``outputs``) always use it.
        self.cache_posts = False
        self.max_image_pixels = MAX_IMAGE_PIXELS
        self.video = VideoSettings.from_config(cfg.video)
        self.max_video_seconds: float | None = None  # a longer clip is refused (the service sets it)
        self.asr = asr if asr is not None else cfg.asr
        self.transcriber: Any = None  # built on first use: loading Whisper takes seconds
        weights = model.head.report().get("modality_weights")
        self.learned_weights: dict[str, float] | None = dict(weights) if weights else None

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        device: str | None = None,
        quantize_text: bool = False,
        onnx: bool = False,
        cache_posts: bool = False,
        asr: str | None = None,
        precision: str | None = None,
        *,
        tta: bool = False,
    ) -> Predictor:
        """``use_cache``: datasets (``predict_samples``, ``outputs``) go through the on-disk feature cache (False for
        serving); single posts and calls only with ``cache_posts=True``, or every request would add files. An
        ensemble folder (``fusent ensemble``) loads as an ``EnsemblePredictor``, which answers the same way."""
        from .ensemble import EnsemblePredictor, is_ensemble

        cache = FeatureCache(cache_dir) if use_cache else None
        if is_ensemble(checkpoint):
            predictor: Predictor = EnsemblePredictor.load(
                checkpoint, cache, device, quantize_text, onnx, asr, precision, tta=tta
            )
        else:
            model = FusentModel.from_pretrained(checkpoint, device=device)
            predictor = cls(model, cache, device, quantize_text, onnx, asr, precision, tta=tta)
        predictor.cache_posts = cache_posts and use_cache
        return predictor

    def warm_up(self) -> None:
        """One throw-away prediction with every modality, so the first real request does not pay for
        allocator and kernel setup (hundreds of milliseconds)."""
        tone = (0.1 * np.sin(np.arange(SAMPLE_RATE // 2) * 0.1)).astype(np.float32)
        post = {"text": "warm up", "image": Image.new("RGB", (64, 64), (128, 128, 128)), "audio": tone}
        post = {m: v for m, v in post.items() if m in self.modalities}
        if post:
            self.predict_batch([post])
        if self.asr != "off":  # loading Whisper takes seconds: not on the first voice note
            from .asr import Transcriber

            self.transcriber = self.transcriber or Transcriber()
            self.transcriber.transcribe(np.zeros(16_000, dtype=np.float32))

    # ------------------------------------------------------------------------------------------ datasets

    def prepare_samples(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> list[Sample]:
        """Clips as frames + soundtrack, sampled as at training time, and transcripts when the model uses them
        (``asr``); idempotent, so a caller may prepare samples to read their transcripts first."""
        seconds = (self.model.config.audio_encoder or {}).get("max_seconds")
        samples = with_video(samples, self.video, seconds)
        if self.asr == "off":
            return samples
        from .asr import Transcriber, TranscriptCache, transcribe_samples

        if self.transcriber is None:
            self.transcriber = Transcriber()
        cache = TranscriptCache(self.cache.root) if self.cache is not None else None
        return transcribe_samples(samples, self.asr, self.transcriber, cache, report, progress)

    def features(
        self,
        samples: Sequence[Sample],
        report: ProblemReport | None = None,
        progress: bool = True,
        batch_size: int = 32,
        cache: bool = True,
    ) -> FeatureTable:
        """The features the model reads for ``samples`` (clips as frames + soundtrack, transcripts when the model uses
        them; the posts as given, not the mirrored view of ``tta``), through the feature cache when the predictor has
        one and ``cache``."""
        report = report or ProblemReport()
        samples = self.prepare_samples(samples, report, progress)
        memo = FeatureMemo(samples, self.cache if cache else None, report, progress, batch_size)
        return self.views(memo)[0]

    def views(self, memo: FeatureMemo) -> list[FeatureTable]:
        """The feature tables the model answers from: the samples as given and, with ``tta``, with mirrored images."""
        keep = self.model.head.uses_states
        given = {m: memo.get(e, keep) for m, e in self.encoders.items() if e is not None}
        tables = [memo.table(given)]
        image = self.encoders.get("image")
        if self.tta and image is not None:
            tables.append(memo.table({**given, "image": memo.get(image, keep, mirrored=True)}))
        return tables

    def outputs(
        self,
        samples: Sequence[Sample],
        report: ProblemReport | None = None,
        progress: bool = True,
        batch_size: int = 32,
    ) -> torch.Tensor:
        """The head's raw outputs ``[N, C]`` (logits; ``[N, 1]`` scores for regression); broken modalities count
        as missing. ``batch_size`` samples are encoded at a time."""
        report = report or ProblemReport()
        samples = self.prepare_samples(samples, report, progress)
        return self.memo_outputs(FeatureMemo(samples, self.cache, report, progress, batch_size))

    def memo_outputs(self, memo: FeatureMemo) -> torch.Tensor:
        """``outputs`` from features encoded in ``memo`` (averaged over the ``tta`` views)."""
        return torch.stack([predict_logits(self.model, table) for table in self.views(memo)]).mean(0)

    def predict_proba_samples(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> np.ndarray:
        """Class probabilities ``[N, C]`` in the order of ``self.labels``."""
        if self.task.name != "classification":
            raise ValueError("this checkpoint predicts regression scores, not class probabilities: use predict_samples")
        return self.task.probabilities(self.outputs(samples, report, progress), self.model.config.temperature).numpy()

    def predict_samples(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> list[str] | list[float]:
        """A label per sample, or a score per sample for a regression checkpoint."""
        return self.task.decode(self.outputs(samples, report, progress), self.labels)

    # ------------------------------------------------------------------------------------------ posts

    def __call__(
        self,
        inputs: str | bytes | Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        image: Any = None,
        audio: Any = None,
        video: Any = None,
        top_k: int | None = None,
        batch_size: int = 32,
    ) -> Prediction | list[Prediction]:
        """Like a Hugging Face pipeline: ``clf("text", image=...)`` or ``clf({"text": ..., "image": ...})`` answers
        one post, ``clf([{...}, "text", ...])`` a list of them. ``top_k``: the best k labels (None = all, sorted)."""
        if isinstance(inputs, list | tuple):
            if image is not None or audio is not None or video is not None:
                raise InputError("bad_call", "with a list of posts, give image / audio / video inside each post's dict")
            posts = [p if isinstance(p, Mapping) else {"text": p} for p in inputs]
            return [p.top(top_k) for p in self.predict_batch(posts, batch_size)]
        post = dict(inputs) if isinstance(inputs, Mapping) else {"text": inputs}
        post.update({k: v for k, v in {"image": image, "audio": audio, "video": video}.items() if v is not None})
        return self._predict_chunk([self.sample(post)])[0].top(top_k)

    def predict_proba(self, posts: Sequence[Mapping[str, Any]] | Mapping[str, Any], batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``[N, C]`` (columns in the order of ``self.labels``, calibrated) for one post or a
        list of posts, as scikit-learn's ``predict_proba``."""
        if self.task.name != "classification":
            raise ValueError("this checkpoint predicts regression scores, not class probabilities: use predict")
        posts = [posts] if isinstance(posts, Mapping) else posts
        order = {label: j for j, label in enumerate(self.labels)}
        out = np.zeros((len(posts), len(self.labels)))
        for i, prediction in enumerate(self.predict_batch(posts, batch_size)):
            for row in prediction:
                out[i, order[row["label"]]] = row["score"]
        return out

    def predict(
        self, text: str | bytes | None = None, image: Any = None, audio: Any = None, video: Any = None
    ) -> Prediction:
        """One post -> ``[{"label": ..., "score": ...}]`` sorted by score, with ``.contributions`` (and
        ``.transcript`` when the model transcribes audio).

        ``image``: a path, encoded bytes, a PIL image or a numpy array; ``audio``: what the audio loader takes (a
        voice note); ``video``: a clip's path or bytes, whose frames and soundtrack fill the image and audio sides.
        Raises InputError when nothing is given, when the model was trained without a given modality, or when
        an input cannot be read (a broken input is never silently treated as missing here).
        """
        return self._predict_chunk([self.sample({"text": text, "image": image, "audio": audio, "video": video})])[0]

    def predict_batch(self, posts: Sequence[Mapping[str, Any]], batch_size: int = 32) -> list[Prediction]:
        """Several posts, each a mapping with any of ``text``, ``image``, ``audio``, ``video``; encoded ``batch_size``
        at a time. Every post is checked before any is encoded, so a bad one fails fast with its index."""
        samples = [self.sample(post, str(i)) for i, post in enumerate(posts)]
        out: list[Prediction] = []
        for start in range(0, len(samples), batch_size):
            out += self._predict_chunk(samples[start : start + batch_size])
        return out

    def sample(self, post: Mapping[str, Any], sample_id: str = "input") -> Sample:
        """Check one post and decode its inputs (text cleaned as at training time, images decoded to RGB)."""
        where = f"post {sample_id}: " if sample_id != "input" else ""
        unknown = set(post) - set(MODALITIES) - {"video"}
        if unknown:
            raise InputError(
                "unknown_field", f"{where}unknown field(s) {sorted(unknown)}; give text, image, audio, video"
            )
        given = {m: v for m, v in post.items() if v is not None}
        video = given.pop("video", None)
        text = given.get("text")
        if text is not None:
            if isinstance(text, bytes | bytearray):
                text = decode_text(bytes(text))[0]
            elif isinstance(text, str):
                text = clean_text(text)
            else:
                raise InputError("bad_text", f"{where}text must be a str, got {type(text).__name__}", "text")
            if not text:
                given.pop("text")
        if not given and video is None:
            raise InputError("no_input", f"{where}give at least one of: {', '.join(self.modalities)}")
        for m in given:
            if m not in self.modalities:
                raise InputError(
                    "unsupported_modality",
                    f"{where}this model was trained without {m} (it reads: {', '.join(self.modalities)})",
                    m,
                )
        image = given.get("image")
        if image is not None:
            try:
                image = to_image(image, self.max_image_pixels)
            except ImageLoadError as exc:
                raise InputError(exc.kind, f"{where}{exc}", "image") from None
        fields = {"text": text or None, "image": image}
        if "audio" in given:
            fields["audio"] = given["audio"]  # decoded by the audio encoder's loader
        sample = Sample(id=sample_id, **fields)
        return self._with_clip(sample, video, where) if video is not None else sample

    def _with_clip(self, sample: Sample, video: Any, where: str) -> Sample:
        """The sample with its clip's frames and soundtrack (lazy) where it has no image / audio of its own. The
        header is checked here (readable, duration, frame size, streams the model can use), before any decoding."""
        if isinstance(video, bytearray | memoryview):
            video = bytes(video)
        if not isinstance(video, str | Path | bytes):
            raise InputError("bad_video", f"{where}video must be a path or the file's bytes", "video")
        source = VideoSource(video)
        try:
            info = probe(source)
        except VideoLoadError as exc:
            raise InputError(exc.kind, f"{where}{exc}", "video") from None
        except ModuleNotFoundError as exc:
            raise InputError("video_unsupported", f"{where}{exc}", "video") from None
        limit = self.max_video_seconds
        if limit and info.duration is not None and info.duration > limit:
            raise InputError(
                "too_long_video", f"{where}the clip is {info.duration:,.1f}s long (limit {limit:g}s)", "video"
            )
        if info.width * info.height > self.max_image_pixels:
            raise InputError(
                "too_large_video",
                f"{where}the clip is {info.width}x{info.height} pixels (limit {self.max_image_pixels:,})",
                "video",
            )
        transcribes = self.asr != "off" and "text" in self.modalities
        usable = (info.has_video and "image" in self.modalities) or (
            info.has_audio and ("audio" in self.modalities or transcribes)
        )
        if not usable and sample.text is None and sample.image is None and sample.audio is None:
            streams = " and ".join(k for k, v in (("video", info.has_video), ("audio", info.has_audio)) if v)
            raise InputError(
                "unusable_video",
                f"{where}the clip has {streams or 'no'} streams; this model reads {', '.join(self.modalities)}",
                "video",
            )
        seconds = (self.model.config.audio_encoder or {}).get("max_seconds")
        image = sample.image if sample.image is not None or not info.has_video else VideoFrames(source, self.video)
        audio = sample.audio if sample.audio is not None or not info.has_audio else VideoSoundtrack(source, seconds)
        return dataclasses.replace(sample, image=image, audio=audio)

    @torch.inference_mode()
    def _predict_chunk(self, samples: list[Sample]) -> list[Prediction]:
        report = ProblemReport()
        samples = self.prepare_samples(samples, report, progress=False)
        decision = self.decide(FeatureMemo(samples, self.cache if self.cache_posts else None, report, progress=False))
        out = []
        for i in range(len(samples)):
            scores = self.task.rows(decision.values[i], self.labels)
            given = {
                m: round(float(decision.contributions[m][i]), 6) for m in self.modalities if decision.present[m][i]
            }
            warnings = [{"kind": k, "detail": msg} for k, sid, msg in report.entries if sid == samples[i].id]
            out.append(Prediction(scores, given, decision.method, warnings, samples[i].transcript))
        return out

    @staticmethod
    def _check_decoded(samples: Sequence[Sample], table: FeatureTable, report: ProblemReport) -> None:
        """Refuse a post with an input its loader could not use (images were checked already: e.g. audio), exactly
        as a dataset reports it; what the loaders tolerate (silent or clipped audio) is predicted, with warnings."""
        for i, sample in enumerate(samples):
            for m, features in table.modalities.items():
                if getattr(sample, m) is None or bool(features.present[i]):
                    continue
                where = f"post {sample.id}: " if sample.id != "input" else ""
                kind, message = next(
                    ((k, msg) for k, sid, msg in report.entries if sid == sample.id and k.endswith(f"_{m}")),
                    (f"corrupt_{m}", f"{m} could not be read"),
                )
                raise InputError(kind, f"{where}{message}", m)

    def decide(self, memo: FeatureMemo) -> Decision:
        """Calibrated probabilities (scores) and modality contributions for the samples of ``memo``; with ``tta``
        the logits and the contributions are averaged over the two views."""
        tables = self.views(memo)
        self._check_decoded(memo.samples, tables[0], memo.report)
        model, index = self.model, torch.arange(len(memo.ids))
        outputs, contributions = [], []
        for table in tables:
            with autocast(model.device, model.config.precision):  # float32 on a CPU; bf16 / fp16 on a GPU
                inputs = model.encode({m: b.to(model.device) for m, b in table.batch(index).items()}, table.texts)
                outputs.append(model.head(inputs).float().cpu())
                present = {m: inputs[m].present.cpu() for m in self.modalities}
                shares, method = self._contributions(inputs, outputs[-1], present)
            contributions.append(shares)
        mean = torch.stack(outputs).mean(0)
        values = self.task.answer(mean, model.config.temperature)
        shares = {m: torch.stack([c[m] for c in contributions]).mean(0) for m in self.modalities}
        return Decision(values, shares, present, method)

    def _contributions(
        self, inputs: dict[str, ModalityBatch], outputs: torch.Tensor, present: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], str]:
        """Per-modality shares ``[B]``: the head's learned weights renormalised over the modalities each post has
        (as the weighted head itself does), else the fall of the top label's probability (the change of the
        score, for regression) when one is masked."""
        if self.learned_weights is not None:
            w = torch.stack([torch.tensor(self.learned_weights[m]) * present[m] for m in self.modalities], 1)
            w = w / w.sum(1, keepdim=True).clamp(min=1e-12)
            return {m: w[:, j] for j, m in enumerate(self.modalities)}, "learned_weights"
        top = outputs.argmax(1, keepdim=True)
        decision, out = self.task.explained(outputs, top, self.model.config.temperature), {}
        for m in self.modalities:
            if not present[m].any():
                out[m] = torch.zeros(len(outputs))
                continue
            masked = {**inputs, m: dataclasses.replace(inputs[m], present=torch.zeros_like(inputs[m].present))}
            out[m] = decision - self.task.explained(
                self.model.head(masked).float().cpu(), top, self.model.config.temperature
            )
        return out, "masking"
