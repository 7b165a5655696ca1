"""What differs between classification and regression, in one place: the targets, the head's width, the
validation metrics and which way is better, and what a prediction cell holds. Everything else (data, encoders,
cache, heads, the trainer, checkpoints) is shared; the loss per task is chosen in ``losses.py``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .data.records import Sample, TaskName
from .metrics import (
    classification_metrics,
    format_metrics,
    format_regression_metrics,
    probability_metrics,
    regression_metrics,
)


class Task:
    """The interface; ``outputs`` are a head's raw ``[N, num_outputs]`` outputs (logits, or the score)."""

    name: TaskName
    monitor: str  # the validation metric early stopping and model selection watch

    def num_outputs(self, labels: Sequence[str]) -> int:
        raise NotImplementedError

    def targets(self, samples: Sequence[Sample], labels: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, outputs: torch.Tensor, labels: Sequence[str]) -> list[Any]:
        """The prediction of each row, as written to a predictions file."""
        raise NotImplementedError

    def metrics(
        self, y_true: torch.Tensor, outputs: torch.Tensor, labels: Sequence[str], temperature: float = 1.0
    ) -> dict[str, Any]:
        """``temperature`` divides classification logits before the softmax (calibration); scores ignore it."""
        raise NotImplementedError

    def score(self, metrics: dict[str, Any]) -> float:
        """The selection score of ``metrics``: higher is better."""
        raise NotImplementedError

    def headline(self, metrics: dict[str, Any]) -> dict[str, float]:
        """The validation numbers kept per epoch in the training history."""
        raise NotImplementedError

    def format(self, metrics: dict[str, Any], title: str = "") -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ what a predictor answers

    def answer(self, outputs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """What a prediction reports per row: calibrated probabilities ``[N, C]``, or the scores ``[N, 1]``."""
        raise NotImplementedError

    def rows(self, values: torch.Tensor, labels: Sequence[str]) -> list[dict[str, Any]]:
        """One post's answer (a row of ``answer``) in a Hugging Face pipeline's shape, best first."""
        raise NotImplementedError

    def explained(self, outputs: torch.Tensor, top: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """``[N]``: what modality contributions explain: the probability of label ``top`` (``[N, 1]``), or the score."""
        raise NotImplementedError

    def combine(self, outputs: Sequence[torch.Tensor], temperatures: Sequence[float]) -> torch.Tensor:
        """Several models' raw outputs -> an ensemble's, which every metric and decoder reads at temperature 1."""
        raise NotImplementedError


class Classification(Task):
    """Targets are label indices; the head outputs one logit per label; selection on validation macro-F1."""

    name: TaskName = "classification"
    monitor = "f1_macro"

    def num_outputs(self, labels: Sequence[str]) -> int:
        return len(labels)

    def targets(self, samples: Sequence[Sample], labels: Sequence[str]) -> torch.Tensor:
        index = {label: i for i, label in enumerate(labels)}
        return torch.tensor([index[s.label] for s in samples], dtype=torch.long)

    def decode(self, outputs: torch.Tensor, labels: Sequence[str]) -> list[Any]:
        return [labels[i] for i in outputs.argmax(1).tolist()]

    def metrics(
        self, y_true: torch.Tensor, outputs: torch.Tensor, labels: Sequence[str], temperature: float = 1.0
    ) -> dict[str, Any]:
        """Label metrics from the argmax, plus ROC-AUC / PR-AUC / ECE from the (temperature-scaled) softmax."""
        y = y_true.tolist()
        return {
            **classification_metrics(y, outputs.argmax(1).tolist(), labels),
            **probability_metrics(y, self.probabilities(outputs, temperature).numpy(), labels),
        }

    def probabilities(self, outputs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return torch.softmax(outputs.float() / temperature, dim=-1)

    def score(self, metrics: dict[str, Any]) -> float:
        return metrics["f1_macro"]

    def headline(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {
            "val_accuracy": metrics["accuracy"],
            "val_f1_macro": metrics["f1_macro"],
            "val_f1_weighted": metrics["f1_weighted"],
            **{f"val_f1_{label}": c["f1"] for label, c in metrics["per_class"].items()},
        }

    def format(self, metrics: dict[str, Any], title: str = "") -> str:
        return format_metrics(metrics, title)

    def answer(self, outputs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return self.probabilities(outputs, temperature)

    def rows(self, values: torch.Tensor, labels: Sequence[str]) -> list[dict[str, Any]]:
        pairs = ({"label": label, "score": float(p)} for label, p in zip(labels, values, strict=True))
        return sorted(pairs, key=lambda r: -r["score"])

    def explained(self, outputs: torch.Tensor, top: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return self.probabilities(outputs, temperature).gather(1, top)[:, 0]

    def combine(self, outputs: Sequence[torch.Tensor], temperatures: Sequence[float]) -> torch.Tensor:
        """The log of the mean calibrated probabilities, softmax(logits / each model's temperature): its softmax
        gives back those mean probabilities."""
        probabilities = [self.probabilities(o, t) for o, t in zip(outputs, temperatures, strict=True)]
        return torch.stack(probabilities).mean(0).clamp_min(1e-12).log()


class Regression(Task):
    """Targets are float scores; the head has one output, read as the score; selection on validation MAE."""

    name: TaskName = "regression"
    monitor = "mae"
    HEADLINE = ("mae", "corr", "acc7", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0")

    def num_outputs(self, labels: Sequence[str]) -> int:
        return 1

    def targets(self, samples: Sequence[Sample], labels: Sequence[str]) -> torch.Tensor:
        return torch.tensor([s.score for s in samples], dtype=torch.float32)

    def decode(self, outputs: torch.Tensor, labels: Sequence[str]) -> list[Any]:
        """Each row's score, unclipped (the metrics clip where their definition does)."""
        return outputs[:, 0].tolist()

    def metrics(
        self, y_true: torch.Tensor, outputs: torch.Tensor, labels: Sequence[str], temperature: float = 1.0
    ) -> dict[str, Any]:
        return regression_metrics(y_true.tolist(), outputs[:, 0].tolist())

    def score(self, metrics: dict[str, Any]) -> float:
        return -metrics["mae"]

    def headline(self, metrics: dict[str, Any]) -> dict[str, float]:
        return {f"val_{key}": metrics[key] for key in self.HEADLINE}

    def format(self, metrics: dict[str, Any], title: str = "") -> str:
        return format_regression_metrics(metrics, title)

    def answer(self, outputs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return outputs

    def rows(self, values: torch.Tensor, labels: Sequence[str]) -> list[dict[str, Any]]:
        return [{"score": float(values[0])}]

    def explained(self, outputs: torch.Tensor, top: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return outputs[:, 0]

    def combine(self, outputs: Sequence[torch.Tensor], temperatures: Sequence[float]) -> torch.Tensor:
        """The mean score."""
        return torch.stack(list(outputs)).mean(0)


TASKS: dict[str, Task] = {"classification": Classification(), "regression": Regression()}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; use {' or '.join(TASKS)}")
    return TASKS[name]
