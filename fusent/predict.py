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
from .tasks import get_task
from .training import predict_logits


class Predictor:
    """``predict(text=..., image=...)`` for one post; ``predict_samples`` for many (through the feature cache).
    A regression checkpoint predicts sentiment scores instead of labels."""

    def __init__(self, model: FusentModel, cache: FeatureCache | None = None, device: str | None = None):
        self.model = model.to(pick_device(device)).eval()
        cfg = model.config
        text = {**cfg.text_encoder, "finetune_layers": 0} if cfg.text_encoder and not cfg.finetune_text else {}
        self.encoders = {}
        if text or cfg.image_encoder:  # none at all for a fine-tuned text-only model: it encodes its text itself
            self.encoders, _ = build_encoders(text or {"name": "none"}, cfg.image_encoder or {"name": "none"}, device)
        if cfg.finetune_text:
            self.encoders["text"] = None  # the model encodes text itself
        self.labels, self.task = cfg.labels, get_task(cfg.task)
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

    def outputs(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> torch.Tensor:
        """The head's raw outputs ``[N, C]`` (logits; ``[N, 1]`` scores for regression); broken modalities count
        as missing."""
        return predict_logits(self.model, self.features(samples, report, progress))

    def predict_proba_samples(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> np.ndarray:
        """Class probabilities ``[N, C]`` in the order of ``self.labels``."""
        if self.task.name != "classification":
            raise ValueError("this checkpoint predicts regression scores, not class probabilities: use predict_samples")
        return torch.softmax(self.outputs(samples, report, progress), dim=-1).numpy()

    def predict_samples(
        self, samples: Sequence[Sample], report: ProblemReport | None = None, progress: bool = True
    ) -> list[str] | list[float]:
        """A label per sample, or a score per sample for a regression checkpoint."""
        return self.task.decode(self.outputs(samples, report, progress), self.labels)

    def predict(self, text: str | None = None, image: Any = None) -> list[dict[str, Any]]:
        """One post -> ``[{"label": ..., "score": ...}]`` sorted by score (the Hugging Face pipeline shape); for a
        regression checkpoint ``[{"score": sentiment score}]``."""
        sample = Sample(id="input", text=text or None, image=image)
        if self.task.name == "regression":
            return [{"score": self.predict_samples([sample], progress=False)[0]}]
        proba = self.predict_proba_samples([sample], progress=False)[0]
        return sorted(
            ({"label": label, "score": float(p)} for label, p in zip(self.labels, proba, strict=True)),
            key=lambda r: -r["score"],
        )
