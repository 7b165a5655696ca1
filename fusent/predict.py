"""A Predictor loaded from a checkpoint: the model plus the frozen encoders it was trained on.

``predict(text=, image=, audio=)`` answers one post in the shape Hugging Face pipelines use, with how much each
modality contributed; ``predict_batch`` answers many; ``predict_samples`` runs whole datasets through the cache.
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

from .data import ImageLoadError, ProblemReport, Sample, load_image
from .data.images import MAX_IMAGE_PIXELS
from .data.records import MODALITIES
from .data.text import clean_text, decode_text
from .encoders.base import Encoder, pick_device
from .encoders.image import MirroredImages
from .encoders.runtime import Int8TextEncoder, OnnxImageEncoder
from .features import FeatureCache, FeatureTable, ModalityBatch, ModalityFeatures, encode_modality
from .model import FusentModel
from .pipeline import build_encoders
from .tasks import get_task
from .training import predict_logits


class InputError(ValueError):
    """A post the model cannot take: ``kind`` names the problem (e.g. ``corrupt_image``, ``no_input``,
    ``unsupported_modality``), ``field`` the input it is about; the REST service answers it with a 4xx."""

    def __init__(self, kind: str, message: str, field: str | None = None):
        super().__init__(message)
        self.kind, self.field = kind, field


class Prediction(list):
    """``[{"label": ..., "score": ...}, ...]`` sorted by score, exactly a Hugging Face pipeline's answer, plus
    ``contributions`` (modality -> share of the decision, for the modalities given) and how they were measured:
    ``"learned_weights"`` (the head's own modality weights) or ``"masking"`` (the drop of the top label's
    probability when that modality alone is hidden)."""

    def __init__(self, scores: list[dict[str, Any]], contributions: dict[str, float], contribution_method: str):
        super().__init__(scores)
        self.contributions, self.contribution_method = contributions, contribution_method

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
        return Image.fromarray(array).convert("RGB")
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
) -> Encoder:
    """The frozen encoder a checkpoint names for ``modality`` (with the CPU speed option that applies to it), taken
    from ``shared`` when an earlier model built the same one: ensemble members on one encoder load it once."""
    quantize, onnx = quantize_text and modality == "text", onnx and modality == "image"
    key = json.dumps([modality, config, str(device), quantize, onnx], sort_keys=True, default=str)
    if shared is not None and key in shared:
        return shared[key]
    none = {"name": "none"}
    configs = {"text": none, "image": none, "audio": None, modality: config}
    if modality == "text":
        configs["text"] = {**config, "finetune_layers": 0}
    encoder = build_encoders(configs["text"], configs["image"], device, configs["audio"])[0][modality]
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
        self, samples: Sequence[Sample], cache: FeatureCache | None, report: ProblemReport, progress: bool = True
    ):
        self.samples, self.cache, self.report, self.progress = samples, cache, report, progress
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
                progress=self.progress,
                keep_states=keep,
            )
            self.done[key] = found
        return found if keep or found.states is None else found.pooled_only()

    def table(self, modalities: dict[str, ModalityFeatures]) -> FeatureTable:
        return FeatureTable(ids=self.ids, modalities=modalities, texts=self.texts)

    def raise_problems(self) -> None:
        """An input the loaders could not use (images were checked already: e.g. audio) is an InputError here."""
        if self.report.counts:
            kind = next(iter(self.report.counts))
            raise InputError(kind, "; ".join(self.report.messages), kind.rsplit("_", 1)[-1])


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
        *,
        tta: bool = False,
        shared_encoders: dict[str, Encoder] | None = None,
    ):
        """``quantize_text``: int8 dynamic quantisation of a frozen text encoder; ``onnx``: the EfficientNet-Lite
        image encoder through ONNX Runtime. Both are CPU speed options that change the scores slightly. ``tta``:
        test-time augmentation, the logits of each post averaged with those of its horizontally mirrored image.
        ``shared_encoders``: frozen encoders by configuration, filled and reused across predictors (ensembles)."""
        self.model = model.to(pick_device(device)).eval()
        cfg = model.config
        self.modalities = [m for m in MODALITIES if m in model.head.uses]
        self.encoders: dict[str, Encoder | None] = {}
        for m in self.modalities:
            if m == "text" and cfg.finetune_text:
                self.encoders[m] = None  # the model encodes text itself
            elif m in model.encoders:  # trained with the head: its parameter-free preprocessing feeds the model
                self.encoders[m] = model.encoders[m]
            elif cfg.encoder_settings(m):
                self.encoders[m] = frozen_encoder(
                    m, cfg.encoder_settings(m), device, quantize_text, onnx, shared_encoders
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
        self.max_image_pixels = MAX_IMAGE_PIXELS
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
        *,
        tta: bool = False,
    ) -> Predictor:
        """``use_cache=False`` for serving: every request would otherwise add files to the on-disk cache. An ensemble
        folder (``fusent ensemble``) loads as an ``EnsemblePredictor``, which answers the same way."""
        from .ensemble import EnsemblePredictor, is_ensemble

        cache = FeatureCache(cache_dir) if use_cache else None
        if is_ensemble(checkpoint):
            return EnsemblePredictor.load(checkpoint, cache, device, quantize_text, onnx, tta=tta)
        model = FusentModel.from_pretrained(checkpoint, device=device)
        return cls(model, cache, device, quantize_text, onnx, tta=tta)

    def warm_up(self) -> None:
        """One throw-away prediction with every modality, so the first real request does not pay for
        allocator and kernel setup (hundreds of milliseconds)."""
        post = {"text": "warm up", "image": Image.new("RGB", (64, 64), (128, 128, 128))}
        post = {m: v for m, v in post.items() if m in self.modalities}
        if post:
            self.predict_batch([post])

    # ------------------------------------------------------------------------------------------ datasets

    def features(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> FeatureTable:
        """The features the model reads for ``samples`` (the posts as given; not the mirrored view of ``tta``)."""
        return self.views(FeatureMemo(samples, self.cache, report or ProblemReport(), progress))[0]

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
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> torch.Tensor:
        """The head's raw outputs ``[N, C]`` (logits; ``[N, 1]`` scores for regression); broken modalities count
        as missing."""
        return self.memo_outputs(FeatureMemo(samples, self.cache, report or ProblemReport(), progress))

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

    def predict(self, text: str | bytes | None = None, image: Any = None, audio: Any = None) -> Prediction:
        """One post -> ``[{"label": ..., "score": ...}]`` sorted by score, with ``.contributions``.

        ``image``: a path, encoded bytes, a PIL image or a numpy array; ``audio``: what the audio loader takes.
        Raises InputError when nothing is given, when the model was trained without a given modality, or when
        an input cannot be read (a broken input is never silently treated as missing here).
        """
        return self._predict_chunk([self.sample({"text": text, "image": image, "audio": audio})])[0]

    def predict_batch(self, posts: Sequence[Mapping[str, Any]], batch_size: int = 32) -> list[Prediction]:
        """Several posts, each a mapping with any of ``text``, ``image``, ``audio``; encoded ``batch_size`` at a
        time. Every post is checked before any is encoded, so a bad one fails fast with its index."""
        samples = [self.sample(post, str(i)) for i, post in enumerate(posts)]
        out: list[Prediction] = []
        for start in range(0, len(samples), batch_size):
            out += self._predict_chunk(samples[start : start + batch_size])
        return out

    def sample(self, post: Mapping[str, Any], sample_id: str = "input") -> Sample:
        """Check one post and decode its inputs (text cleaned as at training time, images decoded to RGB)."""
        where = f"post {sample_id}: " if sample_id != "input" else ""
        unknown = set(post) - set(MODALITIES) - {"text", "image", "audio"}
        if unknown:
            raise InputError("unknown_field", f"{where}unknown field(s) {sorted(unknown)}; give text, image, audio")
        given = {m: v for m, v in post.items() if v is not None}
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
        if not given:
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
        return Sample(id=sample_id, **fields)

    @torch.inference_mode()
    def _predict_chunk(self, samples: list[Sample]) -> list[Prediction]:
        decision = self.decide(FeatureMemo(samples, self.cache, ProblemReport(), progress=False))
        out = []
        for i in range(len(samples)):
            if self.task.name == "regression":
                scores = [{"score": float(decision.values[i, 0])}]
            else:
                scores = sorted(
                    (
                        {"label": label, "score": float(p)}
                        for label, p in zip(self.labels, decision.values[i], strict=True)
                    ),
                    key=lambda r: -r["score"],
                )
            given = {
                m: round(float(decision.contributions[m][i]), 6) for m in self.modalities if decision.present[m][i]
            }
            out.append(Prediction(scores, given, decision.method))
        return out

    def decide(self, memo: FeatureMemo) -> Decision:
        """Calibrated probabilities (scores) and modality contributions for the samples of ``memo``; with ``tta``
        the logits and the contributions are averaged over the two views."""
        tables = self.views(memo)
        memo.raise_problems()
        model, index = self.model, torch.arange(len(memo.ids))
        outputs, contributions = [], []
        for table in tables:
            inputs = model.encode({m: b.to(model.device) for m, b in table.batch(index).items()}, table.texts)
            outputs.append(model.head(inputs).cpu())
            present = {m: inputs[m].present.cpu() for m in self.modalities}
            shares, method = self._contributions(inputs, outputs[-1], present)
            contributions.append(shares)
        mean = torch.stack(outputs).mean(0)
        values = mean if self.task.name == "regression" else self.task.probabilities(mean, model.config.temperature)
        shares = {m: torch.stack([c[m] for c in contributions]).mean(0) for m in self.modalities}
        return Decision(values, shares, present, method)

    def _decision(self, outputs: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """What contributions explain: the probability of the predicted label, or the regression score."""
        if self.task.name == "regression":
            return outputs[:, 0]
        return self.task.probabilities(outputs, self.model.config.temperature).gather(1, top)[:, 0]

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
        decision, out = self._decision(outputs, top), {}
        for m in self.modalities:
            if not present[m].any():
                out[m] = torch.zeros(len(outputs))
                continue
            masked = {**inputs, m: dataclasses.replace(inputs[m], present=torch.zeros_like(inputs[m].present))}
            out[m] = decision - self._decision(self.model.head(masked).cpu(), top)
        return out, "masking"
