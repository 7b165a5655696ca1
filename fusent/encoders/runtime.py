"""CPU speed options for prediction, each off by default: dynamic int8 quantisation of the text encoder, and the
EfficientNet-Lite image encoder run by ONNX Runtime. Both keep the encoder's interface and change its cache key
(their features differ slightly, so they must never be mixed with the float features in the cache)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..atomic import atomic_target
from ..threads import onnx_session_options
from .base import Encoder
from .image import RUN_IMAGES, EfficientNetLiteEncoder, feature_map_outputs
from .text import TextEncoder

log = logging.getLogger("fusent")
DEFAULT_ONNX_DIR = Path(os.environ.get("FUSENT_CACHE", Path.home() / ".cache" / "fusent")) / "onnx"


class Int8TextEncoder(Encoder):
    """A TextEncoder whose Linear layers run with int8 weights, activations quantised per batch on the fly
    (``torch.ao.quantization.quantize_dynamic``); embeddings, LayerNorm and pooling stay float."""

    modality = "text"

    def __init__(self, base: TextEncoder):
        if base.finetune_layers:
            raise ValueError("int8 quantisation is for frozen text encoders (this model fine-tunes its own)")
        from torch.ao.quantization import quantize_dynamic

        self.base, self.dim = base, base.dim
        with warnings.catch_warnings():  # torch's notice that quantised tensor types will move to torchao
            warnings.simplefilter("ignore")
            base.model = quantize_dynamic(base.model, {nn.Linear}, dtype=torch.qint8)

    def settings(self) -> dict[str, Any]:
        return {**self.base.settings(), "runtime": "int8-dynamic"}

    def fingerprint(self) -> str:
        return self.base.fingerprint()

    def encode(self, items: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.base.encode(items)


class OnnxImageEncoder(Encoder):
    """The packaged EfficientNet-Lite exported once to ONNX (kept in ``directory`` under its cache key) and run by
    ONNX Runtime with as many threads as torch has; preprocessing is the torch encoder's own."""

    modality = "image"

    def __init__(self, base: Encoder, directory: str | Path | None = None):
        if not isinstance(base, EfficientNetLiteEncoder):
            raise ValueError("ONNX Runtime is offered for the packaged EfficientNet-Lite image encoders only")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("ONNX Runtime is not installed: pip install 'fusent[speed]'") from None
        self.base, self.dim = base, base.dim
        self.path = Path(directory or DEFAULT_ONNX_DIR) / f"{base.cache_key()}.onnx"
        if not self.path.exists():
            self._export()
        options = onnx_session_options()  # torch's thread count, idle workers sleep instead of spinning
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        base.model = None  # the torch weights are no longer needed

    def _export(self) -> None:
        model = self.base.model  # Lite variants use ReLU6 (never set_swish: it would swap in Swish)

        class FeatureMap(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return model.extract_features(x)

        example = torch.zeros(1, 3, self.base.size, self.base.size)
        log.info("exporting %s to %s", self.base.name, self.path)
        with warnings.catch_warnings(), atomic_target(self.path) as tmp:  # the exporter's deprecation notes
            warnings.simplefilter("ignore")
            self._run_export(FeatureMap().eval(), example, tmp)

    @staticmethod
    def _run_export(module: nn.Module, example: torch.Tensor, tmp: Path) -> None:
        # the TorchScript exporter: the default torch.export one needs onnxscript and gives the same graph here
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=["pixels"],
            output_names=["fmap"],
            dynamic_axes={"pixels": {0: "batch"}, "fmap": {0: "batch"}},
            opset_version=17,
        )

    def settings(self) -> dict[str, Any]:
        return {**self.base.settings(), "runtime": "onnxruntime"}

    def fingerprint(self) -> str:
        return self.base.fingerprint()

    def encode(self, items: list[Image.Image]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``RUN_IMAGES`` a call: a batch of 32 Lite2 images took 10.7 ms an image, runs of 2-4 7.2-7.7 ms."""
        pixels = self.base.preprocess(items).numpy()
        fmaps = [
            self.session.run(["fmap"], {"pixels": pixels[i : i + RUN_IMAGES]})[0]
            for i in range(0, len(pixels), RUN_IMAGES)
        ]
        return feature_map_outputs(torch.from_numpy(np.concatenate(fmaps)))
