"""The image network of paper 001 (§3.2), trained from scratch with the fusion head: two 2D-Inception blocks
joined by average pooling + batch norm, then the self-attention module of eq. 5 with a residual add.

Reading of the paper: ``d`` is a kernel width (the paper's "field of view"), so the branches are 1x1 -> dxd, a
2dx2d convolution, and a 1.5d pooling (rounded to an odd width) followed by a 1x1 channel mapping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .base import ModalityBatch, TrainableEncoder, register_trainable
from .image import resize_center_crop


class Inception2D(nn.Module):
    """Three branches concatenated on channels: [conv_d(conv_1x1(x)); conv_2d(x); conv_1x1(pool_1.5d(x))]."""

    def __init__(self, in_channels: int, branch_channels: int, d: int = 3):
        super().__init__()
        c = branch_channels
        self.branch1 = nn.Sequential(nn.Conv2d(in_channels, c, 1), nn.ReLU(), nn.Conv2d(c, c, d, padding="same"))
        k = 2 * d  # an even width: pad one more on the right/bottom, as "same" padding would
        pad = nn.ZeroPad2d((k // 2 - 1, k // 2, k // 2 - 1, k // 2))
        self.branch2 = nn.Sequential(pad, nn.Conv2d(in_channels, c, k))
        pool = 2 * round(1.5 * d / 2) + 1  # 1.5d, rounded to an odd width so "same" padding is symmetric
        self.branch3 = nn.Sequential(nn.MaxPool2d(pool, stride=1, padding=pool // 2), nn.Conv2d(in_channels, c, 1))
        self.out_channels = 3 * c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1))


class SelfAttention2D(nn.Module):
    """Eq. 5: s_ij = f(x_i)^T g(x_j), beta = softmax over i, o_j = sum_i beta_ji h(x_i); output x + gamma * o.

    gamma starts at 0 (as in SAGAN, which eq. 5 follows), so the block begins as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.f, self.g = nn.Conv1d(channels, inner, 1), nn.Conv1d(channels, inner, 1)
        self.h = nn.Conv1d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, N]
        s = self.f(x).transpose(1, 2) @ self.g(x)  # [B, N_i, N_j]
        beta = s.softmax(dim=1)  # normalised over the attended regions i
        return x + self.gamma * (self.h(x) @ beta)


@register_trainable("image", "inception-sa")
class InceptionSAEncoder(TrainableEncoder):
    """2D-Inception + self-attention (paper 001 §3.2) over ``size`` x ``size`` RGB images.

    Cached input: the resized pixels ``[3, size, size]`` in 0-255. States: the final feature map as
    ``(size/4)^2`` patches of width ``out_dim``; pooled: their mean.
    """

    modality = "image"
    dim = 3  # the cached summary (mean colour); the head sees ``out_dim``

    def __init__(self, size: int = 64, d: int = 3, channels: int = 16):
        super().__init__()
        self.size, self.d, self.channels = size, d, channels
        self.block1 = Inception2D(3, channels, d)
        self.between = nn.Sequential(nn.AvgPool2d(2), nn.BatchNorm2d(self.block1.out_channels))
        self.block2 = Inception2D(self.block1.out_channels, 2 * channels, d)
        self.after = nn.Sequential(nn.AvgPool2d(2), nn.BatchNorm2d(self.block2.out_channels))
        self.attention = SelfAttention2D(self.block2.out_channels)
        self.out_dim = self.block2.out_channels

    def settings(self) -> dict[str, Any]:
        return {"name": "inception-sa", "size": self.size, "d": self.d, "channels": self.channels}

    def cache_key(self) -> str:  # only the preprocessing decides what is cached
        return f"pixels-{self.size}-center"

    @torch.no_grad()
    def encode(self, items: list[Image.Image]) -> tuple[list[torch.Tensor], torch.Tensor]:
        pixels = [torch.from_numpy(np.array(resize_center_crop(img, self.size))).permute(2, 0, 1) for img in items]
        return [p.float() for p in pixels], torch.stack([p.float().mean((1, 2)) for p in pixels])

    def forward(self, batch: ModalityBatch) -> ModalityBatch:
        x = (batch.states / 255.0 - 0.5) / 0.25  # [B, 3, H, W]
        x = self.after(self.block2(self.between(self.block1(x))))
        states = self.attention(x.flatten(2)).transpose(1, 2)  # [B, N, C]
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        return ModalityBatch(states=states, mask=mask, pooled=states.mean(1), present=batch.present)

    def augment(self, batch: ModalityBatch, generator: torch.Generator) -> ModalityBatch:
        """Paper 003's flip, rotation and brightness, plus paper 001's random crop (resized back), per image."""
        x = batch.states
        n = x.shape[0]
        rand = torch.rand(n, 5, generator=generator).to(x.device)
        angle = (rand[:, 0] - 0.5) * (2 * math.radians(15))  # rotation within +-15 degrees
        scale = 0.75 + 0.25 * rand[:, 1]  # crop keeping 75-100% of the side
        flip = torch.where(rand[:, 2] < 0.5, -1.0, 1.0)
        shift = (rand[:, 3:5] - 0.5) * 2 * (1 - scale[:, None])  # crop position within the image
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
        brightness = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator).to(x.device)
        x = (x * brightness).clamp(0, 255)
        return ModalityBatch(states=x, mask=batch.mask, pooled=batch.pooled, present=batch.present)
