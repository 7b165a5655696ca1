"""The trainer's resumable state: written atomically after every epoch, so a killed run (preempted, Ctrl-C, out of
time) continues from its last completed epoch with ``fusent train --resume`` and ends where the uninterrupted run
would have: same weights, optimizer moments, learning-rate schedule position, random number streams, best epoch so
far, patience count and history.

One file, ``resume.pt`` in the run folder, written by rank 0; under ``torch.distributed`` it holds every rank's
random number states (they differ per rank), so a resumed job needs the same world size.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .atomic import atomic_target

STATE_FILE = "resume.pt"
#: bump when the saved layout changes; an older file is refused with a message rather than misread
VERSION = 1


def rng_state(batch_gen: torch.Generator) -> dict[str, Any]:
    """This process's random number states: Python, NumPy, torch (CPU and CUDA) and the trainer's per-batch
    generator."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "batch_gen": batch_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], batch_gen: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    batch_gen.set_state(state["batch_gen"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict[str, Any], batch_gen: torch.Generator) -> None:
    """Write ``state`` plus every rank's RNG state to ``path`` (rank 0 writes; every rank must call this)."""
    rngs = distributed.gather_objects(rng_state(batch_gen))
    if not distributed.is_main():
        return
    full = {"version": VERSION, "world_size": distributed.world_size(), "rng": rngs, **state}
    with atomic_target(path) as tmp:
        torch.save(full, tmp)


def load(path: Path, config: Any) -> dict[str, Any]:
    """The saved state, checked against this run: same training settings, same world size. Raises ValueError with
    what to do when it does not fit."""
    if not path.exists():
        raise ValueError(f"no resumable state at {path}: the run finished (or never completed an epoch); train again")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != VERSION:
        raise ValueError(f"{path} was written by another fusent version; train again without --resume")
    saved, now = state["config"], asdict(config)
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        raise ValueError(
            f"{path} was trained with other settings ({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); "
            "resume with the same options"
        )
    if state["world_size"] != distributed.world_size():
        raise ValueError(
            f"{path} was written by {state['world_size']} process(es), this job has {distributed.world_size()}; "
            f"resume with --nproc {state['world_size']}"
        )
    return state
