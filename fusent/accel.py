"""GPU path helpers (issue 15, item 5; a skeleton): the mixed-precision dtype a device supports, an autocast
context that is a no-op on a CPU, and host-to-device copies from pinned memory.

Not yet wired into the encoders, the trainer or the service: autocast changes frozen features slightly, so it must
enter the encoders' cache keys (``settings()``) before encoding under it may share the feature cache. Everything here
imports and runs without a GPU; ``benchmarks/gpu_path.py`` measures CPU figures and, when CUDA is present, GPU ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``device``: bfloat16 where the GPU supports it (no loss scaling needed), else float16;
    None on a CPU (this CPU build's bf16 kernels are slower than fp32 for these models)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[torch.dtype | None]:
    """Mixed precision on a GPU (yields the dtype), nothing on a CPU (yields None)."""
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        yield None
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield dtype


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; to a GPU through pinned memory without blocking, so the copy overlaps compute."""
    device = torch.device(device)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def needs_grad_scaler(device: torch.device | str) -> bool:
    """float16 autocast needs loss scaling when training (bfloat16 has float32's range and does not)."""
    return amp_dtype(device) == torch.float16
