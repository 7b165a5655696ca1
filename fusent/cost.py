"""What a run cost: wall time per stage, peak memory (RSS, and GPU memory on a GPU).

Stages are exclusive: a stage opened inside another pauses the outer one, so image decoding timed inside the
encoding pass is counted as ``decode`` and not also as ``encode``, and the stage times add up to the wall time
spent inside stages. The code that does the work marks its stage with ``stage("encode")``; a command that wants the
figures wraps itself in ``recording()`` and reads ``summary()`` at the end. Outside ``recording()`` marking a stage
costs two clock reads and records nothing.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

#: stage names in report order; others (if any) follow in the order first seen
STAGES = ("load", "decode", "encode", "train", "evaluate")


class Costs:
    """Seconds per stage, with a stack of open stages (only the innermost one's clock runs)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        reset_peak_gpu()  # the peak of this recording, not of GPU work the process did before it
        self.seconds: dict[str, float] = {}
        self._stack: list[tuple[str, float]] = []

    def _charge(self, now: float) -> None:
        if self._stack:
            name, since = self._stack[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - since

    def push(self, name: str) -> None:
        now = time.perf_counter()
        self._charge(now)
        self._stack.append((name, now))

    def pop(self) -> None:
        now = time.perf_counter()
        self._charge(now)
        self._stack.pop()
        if self._stack:  # the outer stage's clock restarts now
            self._stack[-1] = (self._stack[-1][0], now)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``stage_seconds`` (every stage of STAGES, 0 when not reached), ``other_seconds`` outside
        every stage (imports, process start-up, writing files), ``wall_seconds`` since recording began,
        ``peak_rss_mb`` of this process (and of its finished children, e.g. compare's workers), and ``peak_gpu_mb``
        when CUDA was used."""
        order = [*STAGES, *(s for s in self.seconds if s not in STAGES)]
        wall = time.perf_counter() - self.started
        out: dict[str, Any] = {
            "stage_seconds": {s: round(self.seconds.get(s, 0.0), 4) for s in order},
            "other_seconds": round(max(0.0, wall - sum(self.seconds.values())), 4),
            "wall_seconds": round(wall, 4),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        children = peak_rss_mb(resource.RUSAGE_CHILDREN)
        if children > 0:
            out["peak_rss_children_mb"] = round(children, 1)
        gpu = peak_gpu_mb()
        if gpu is not None:
            out["peak_gpu_mb"] = round(gpu, 1)
        return out


_current: Costs | None = None


@contextlib.contextmanager
def recording() -> Iterator[Costs]:
    """Record the stages run inside the block (nested recordings share the outer one)."""
    global _current
    if _current is not None:
        yield _current
        return
    _current = Costs()
    try:
        yield _current
    finally:
        _current = None


def current() -> Costs | None:
    """The recording in progress, if any."""
    return _current


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge the time spent inside the block to ``name`` (pausing the enclosing stage)."""
    costs = _current
    if costs is None:
        yield
        return
    costs.push(name)
    try:
        yield
    finally:
        costs.pop()


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb() -> float | None:
    """Peak CUDA memory allocated by this process in MiB, or None when CUDA was not used (never initialises it)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return max(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count())) / 2**20


def reset_peak_gpu() -> None:
    """Restart the CUDA peak-memory counters, where CUDA is in use (never initialises it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        for device in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(device)


def machine_load() -> str:
    """The load average (1 and 5 min) against the cores: what a benchmark's wall times were measured under."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def format_costs(summary: dict[str, Any]) -> str:
    """The cost table printed at the end of a run: seconds and share of wall time per stage, then peak memory."""
    wall = summary["wall_seconds"] or 1.0
    lines = ["cost            seconds   share"]
    for name, seconds in summary["stage_seconds"].items():
        lines.append(f"  {name:<12}{seconds:>9.2f}  {100 * seconds / wall:>5.1f}%")
    other = summary.get("other_seconds", 0.0)
    lines.append(f"  {'other':<12}{other:>9.2f}  {100 * other / wall:>5.1f}%")
    lines.append(f"  {'wall':<12}{summary['wall_seconds']:>9.2f}")
    memory = f"peak RSS {summary['peak_rss_mb']:.0f} MiB"
    if "peak_rss_children_mb" in summary:
        memory += f" (workers {summary['peak_rss_children_mb']:.0f} MiB)"
    if "peak_gpu_mb" in summary:
        memory += f"; peak GPU {summary['peak_gpu_mb']:.0f} MiB"
    return "\n".join([*lines, memory])
