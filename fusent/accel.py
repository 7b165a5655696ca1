"""The GPU path (issue 15, item 5): mixed precision, pinned host-to-device copies, loss scaling.

With ``--precision auto`` (the default) a CUDA device runs frozen encoding, training and prediction under
``torch.autocast`` in bfloat16 (float16 plus a GradScaler where the GPU lacks bf16); a CPU runs in float32, as it
always did (this CPU build's bf16 kernels are slower: MiniLM encoded 10 texts/s under CPU bf16 autocast, 37-61 in
float32, 1 thread). ``--precision fp32`` turns mixed precision off everywhere. The option is recorded in the
checkpoint config, so a predictor uses what training used.

Autocast changes frozen features slightly, so the dtype enters an encoder's cache key (``cache_key_fields``): fp32
and bf16 features never share a cache entry. On a CPU nothing is added, so the keys (and the caches) written before
the GPU path existed stay valid. Everything here imports and runs without a GPU; ``benchmarks/gpu_path.py``
measures CPU figures and, when CUDA is present, GPU ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .encoders.base import Encoder

T = TypeVar("T")


def amp_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device``: bfloat16 where the GPU supports it (no loss scaling needed), else float16;
    None on a CPU, on other devices and with ``precision="fp32"``."""
    device = torch.device(device)
    if precision == "fp32" or device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str = "auto") -> Iterator[torch.dtype | None]:
    """Mixed precision where ``amp_dtype`` gives a dtype (yields it); else float32 (yields None): a no-op on a CPU,
    and on a GPU an explicit float32 region even inside an enclosing autocast."""
    device = torch.device(device)
    dtype = amp_dtype(device, precision)
    if dtype is not None:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield dtype
    elif device.type == "cuda":
        with torch.autocast(device_type="cuda", enabled=False):
            yield None
    else:
        yield None


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` on ``device``; from host memory to a GPU through pinned memory without blocking, so the copy
    overlaps compute (the caching host allocator keeps the pinned buffer alive until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def loader_options(device: torch.device | str) -> dict[str, Any]:
    """Keyword arguments for a ``torch.utils.data.DataLoader`` feeding ``device``: pinned batches on a GPU."""
    return {"pin_memory": torch.device(device).type == "cuda"}


def needs_grad_scaler(device: torch.device | str, precision: str = "auto") -> bool:
    """float16 autocast needs loss scaling when training (bfloat16 has float32's range and does not)."""
    return amp_dtype(device, precision) == torch.float16


# ------------------------------------------------------------------------------------------- frozen encoders


def encoding_dtype(encoder: Encoder) -> torch.dtype | None:
    """The dtype ``encoder`` encodes under: its device's autocast dtype for a frozen torch encoder (one with a
    ``device``), None for a network trained here (its ``encode`` only preprocesses) and for other runtimes."""
    if encoder.trainable or not isinstance(getattr(encoder, "device", None), torch.device):
        return None
    return amp_dtype(encoder.device, getattr(encoder, "precision", "auto"))


def cache_key_fields(encoder: Encoder) -> dict[str, str]:
    """What mixed precision adds to ``encoder``'s cache key: nothing in float32 (every CPU key stays as it was)."""
    dtype = encoding_dtype(encoder)
    return {} if dtype is None else {"precision": str(dtype).removeprefix("torch.")}


def encode_frozen(
    encoder: Encoder, encode: Callable[[Encoder, list[Any]], tuple[list[torch.Tensor], torch.Tensor]], items: list[Any]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``encode(encoder, items)`` under the encoder's autocast, with float32 outputs (what the cache and the heads
    read); in float32 exactly the plain call."""
    dtype = encoding_dtype(encoder)
    if dtype is None:
        return encode(encoder, items)
    with autocast(encoder.device, getattr(encoder, "precision", "auto")):  # type: ignore[attr-defined]
        states, pooled = encode(encoder, items)
    return [s.float() for s in states], pooled.float()


def set_precision(encoders: dict[str, Encoder | None], precision: str) -> None:
    """Give every frozen encoder the run's precision (read by ``encoding_dtype`` and so by its cache key)."""
    for encoder in encoders.values():
        if encoder is not None:
            encoder.precision = precision  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------- training


class MixedPrecision:
    """The trainer's mixed precision: ``run`` computes a loss under autocast, ``backward`` / ``step`` scale it when
    float16 needs it (a disabled GradScaler is a plain ``backward()`` / ``optimizer.step()``)."""

    def __init__(self, device: torch.device | str, precision: str = "auto"):
        self.device, self.precision = torch.device(device), precision
        self.dtype = amp_dtype(self.device, precision)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with autocast(self.device, self.precision):
            return fn(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step (skipped by the scaler when float16 gradients overflowed), then the scale update."""
        self.scaler.step(optimizer)
        self.scaler.update()
