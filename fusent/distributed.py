"""Data-parallel training on ``torch.distributed``: one process per rank (launched by ``torchrun``, or by
``fusent train --nproc N``), each training on its share of every epoch's batches, gradients averaged across ranks
before every optimizer step, so every rank holds the same weights and computes the same validation metrics (and so
agrees on early stopping). Only rank 0 writes files.

Gradients are averaged by hand (one all-reduce of a flat buffer per step) rather than through
``DistributedDataParallel``: the trainer calls the model's own ``loss`` / ``encode`` / ``training_loss`` methods,
not ``forward``, which DDP's hooks would not see. Backend: ``nccl`` when the ranks run on CUDA, else ``gloo``.
Outside a launched job (world size 1) every function here is a no-op, so the plain path is unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes files and prints results (rank 0, or the only process)."""
    return rank() == 0


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE) with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str | None = None, timeout_s: float = 1800.0) -> str | None:
    """Join the process group torchrun describes in the environment; returns the device this rank should use
    (``cuda:LOCAL_RANK`` when CUDA is wanted and present, else ``device``). A no-op without a launcher.
    ``nccl`` needs a GPU per rank: with more ranks than GPUs on a machine, ranks share them over ``gloo``."""
    if not launched() or dist.is_initialized():
        return device
    backend = "gloo"
    if torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        local, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        torch.cuda.set_device(local % gpus)
        device = f"cuda:{local % gpus}"
        backend = "nccl" if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= gpus else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def shard(items: Sequence[T], pad: bool = True) -> list[T]:
    """This rank's share of ``items``: rank r takes items r, r + W, r + 2W, ... With ``pad`` every rank gets the
    same count (as ``DistributedSampler``; a rank short of a batch would wait forever for the others' gradients):
    the list is first padded by wrapping around to a multiple of the world size. Consecutive items go to different
    ranks, so W ranks with batch size B step through an epoch the way one process with batch size W * B does."""
    items = list(items)
    world = world_size()
    if world == 1:
        return items
    padded = items + [items[i % len(items)] for i in range((-len(items)) % world)] if items and pad else items
    return padded[rank() :: world]


def average_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks, in one all-reduce. A parameter without a gradient on some rank
    (a branch its batch did not reach) gets the mean over the ranks that had one, and stays without a gradient
    where no rank had one, so the optimizer treats it as the one-process trainer would."""
    if not active():
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    device = params[0].device
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        + [torch.tensor([float(p.grad is not None) for p in params], device=device)]
    )
    dist.all_reduce(flat)
    counts = flat[-len(params) :]
    offset = 0
    for p, count in zip(params, counts.tolist(), strict=True):
        n = p.numel()
        if count > 0:
            p.grad = (flat[offset : offset + n] / count).view_as(p).to(p.dtype)
        offset += n


def sum_over_ranks(*values: float) -> list[float]:
    """Each value summed over ranks (e.g. a training loss total and its sample count)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":  # nccl reduces CUDA tensors only
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Rank 0's weights and buffers on every rank (each rank initialised with the same seed; this makes sure)."""
    if not active():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (a one-item list without a process group)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each launched rank runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m fusent.cli ARGV`` in ``nproc`` processes under torch's own launcher (``torchrun``,
    standalone rendezvous on this machine); returns its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command += ["-m", "fusent.cli", *strip_nproc(argv)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.run(command, env=env, check=False).returncode
