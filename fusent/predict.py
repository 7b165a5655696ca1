"""A Predictor loaded from a checkpoint: the model plus the frozen encoders it was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import ProblemReport, Sample
from .encoders.base import pick_device
from .features import FeatureCache, FeatureTable, build_features
from .model import FusentModel
from .pipeline import build_encoders
from .training import predict_logits


class Predictor:
    """``predict(text=..., image=..., audio=...)`` for one post; ``predict_samples`` for many (through the feature
    cache)."""

    def __init__(self, model: FusentModel, cache: FeatureCache | None = None, device: str | None = None):
        self.model = model.to(pick_device(device)).eval()
        cfg = model.config
        text = {**cfg.text_encoder, "finetune_layers": 0} if cfg.text_encoder and not cfg.finetune_text else {}
        self.encoders, _ = build_encoders(
            text or {"name": "none"}, cfg.image_encoder or {"name": "none"}, device, cfg.audio_encoder or None
        )
        if cfg.finetune_text:
            self.encoders["text"] = None  # the model encodes text itself
        self.labels = cfg.labels
        self.cache = cache

    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        device: str | None = None,
    ) -> Predictor:
        model = FusentModel.from_pretrained(checkpoint, device=device)
        return cls(model, FeatureCache(cache_dir) if use_cache else None, device)

    def features(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> FeatureTable:
        return build_features(
            samples,
            self.encoders,
            self.cache,
            report or ProblemReport(),
            progress=progress,
            keep_states=self.model.head.uses_states,
        )

    def predict_proba_samples(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> np.ndarray:
        """Class probabilities ``[N, C]`` in the order of ``self.labels``; broken modalities count as missing."""
        table = self.features(samples, report, progress)
        return torch.softmax(predict_logits(self.model, table), dim=-1).numpy()

    def predict_samples(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> list[str]:
        proba = self.predict_proba_samples(samples, report, progress)
        return [self.labels[i] for i in proba.argmax(1)] if len(proba) else []

    def predict(self, text: str | None = None, image: Any = None, audio: Any = None) -> list[dict[str, Any]]:
        """One post -> ``[{"label": ..., "score": ...}]`` sorted by score (the Hugging Face pipeline shape).
        ``audio``: a file path, its bytes, a ``(waveform, rate)`` pair or a 16 kHz waveform."""
        sample = Sample(id="input", text=text or None, image=image, audio=audio)
        proba = self.predict_proba_samples([sample], progress=False)[0]
        return sorted(
            ({"label": label, "score": float(p)} for label, p in zip(self.labels, proba, strict=True)),
            key=lambda r: -r["score"],
        )
