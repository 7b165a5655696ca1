"""fusent: multimodal sentiment analysis with the fusion methods of the literature behind one command.

The public API is imported lazily (PEP 562 ``__getattr__``), so ``import fusent`` and ``fusent --help`` stay fast
and torch-free; ``from fusent import Predictor`` imports the model code then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .threads import passive_openmp

passive_openmp()  # before anything loads torch: OpenMP reads its wait policy once, when it loads

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "Predictor": "predict",
    "Prediction": "predict",
    "InputError": "predict",
    "FusentModel": "model",
    "ModelConfig": "model",
    "TrainConfig": "options",
    "EncoderSettings": "options",
    "OptionError": "options",
    "load_dataset": "data",
    "prepare": "train_flow",
    "fit": "train_flow",
    "available_heads": "fusion",
    "create_head": "fusion",
}

__all__ = [
    "EncoderSettings",
    "FusentModel",
    "InputError",
    "ModelConfig",
    "OptionError",
    "Prediction",
    "Predictor",
    "TrainConfig",
    "__version__",
    "available_heads",
    "create_head",
    "fit",
    "load_dataset",
    "prepare",
]

if TYPE_CHECKING:  # pragma: no cover
    from .data import load_dataset
    from .fusion import available_heads, create_head
    from .model import FusentModel, ModelConfig
    from .options import EncoderSettings, OptionError, TrainConfig
    from .predict import InputError, Prediction, Predictor
    from .train_flow import fit, prepare


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fusent' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
