"""Temperature scaling (Guo et al. 2017): one scalar T > 0 divides the logits so that the softmax's confidence
matches accuracy. Fitted on validation logits only (the test part stays untouched); the argmax, so every label
metric, is unchanged."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar


def nll(logits: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the labels under ``softmax(logits / temperature)``."""
    return float(torch.nn.functional.cross_entropy(logits.double() / temperature, y.long()))


def fit_temperature(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The T in [0.05, 20] minimising validation NLL (a bounded 1-D search over log T); 1.0 without samples."""
    if len(y) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: nll(logits, y, math.exp(log_t)), bounds=(math.log(0.05), math.log(20.0)), method="bounded"
    )
    return float(np.exp(result.x))
