"""CPU thread hygiene: size every thread pool (torch, OpenMP / MKL / OpenBLAS, ONNX Runtime) from the CPUs this
process may actually use, and make idle workers sleep instead of spin.

Why: ``os.cpu_count()`` counts the machine, not the CPUs a container's cgroup quota or a ``taskset`` mask leaves
us; OpenMP workers that spin at every barrier take the cores from whatever else runs; and more threads than idle
cores make every parallel op wait at its barrier for a thread that has no time slice. With a second job on the
same cores, image encoding fell from 28 to about 3 samples/s. This module is torch-free at import time: it must be
able to set OpenMP's environment before torch (and its libgomp) is loaded.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("fusent")

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
LOADAVG = Path("/proc/loadavg")
#: Environment variables read by the thread pools of native libraries when they load (children inherit them).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def passive_openmp() -> None:
    """Ask OpenMP workers to sleep at barriers rather than spin (unless the user chose otherwise). Only effective
    before libgomp loads, which is why ``fusent/__init__.py`` calls it first thing."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _quota_v2(text: str) -> float | None:
    """``cpu.max`` of cgroup v2: ``"<quota> <period>"`` or ``"max <period>"`` (no limit)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return int(parts[0]) / int(parts[1])


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota (in CPUs, e.g. 1.5) of this process's cgroup and its ancestors, the tightest one; None when
    unlimited or when there is no cgroup file to read (not Linux)."""
    limits: list[float] = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    # cgroup v2: one "0::/path" line; the quota may sit on any ancestor. The container's own root is also checked:
    # inside a cgroup namespace /proc/self/cgroup shows "/" and the limit is on the mounted root itself.
    own = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
    folder = root / own.lstrip("/")
    candidates = [folder, *folder.parents] if folder != root else [root]
    for directory in candidates:
        if directory != root and root not in directory.parents:
            continue
        try:
            quota = _quota_v2((directory / "cpu.max").read_text())
        except (OSError, ValueError):
            continue
        if quota is not None:
            limits.append(quota)
    # cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us (-1 = unlimited)
    for name in ("cpu", "cpu,cpuacct"):
        try:
            quota_us = int((root / name / "cpu.cfs_quota_us").read_text())
            period_us = int((root / name / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota_us > 0 and period_us > 0:
            limits.append(quota_us / period_us)
    return min(limits) if limits else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may run on: its affinity mask (``taskset``, a scheduler's cpuset), capped by the
    cgroup CPU quota rounded down (a 1.5-CPU quota runs one thread at full speed; two would be throttled), at
    least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def free_cpus(loadavg: Path = LOADAVG, samples: int = 5, interval: float = 0.02) -> int | None:
    """CPUs of the machine no other thread is running on right now: the machine's CPUs minus the runnable threads
    (the median of a few reads of /proc/loadavg's "running" field, this process left out), at least 1. None where
    that file is missing (not Linux). Not the 1-minute load average: it still counts a job that just ended."""
    counts = []
    for i in range(samples):
        try:
            running = int(loadavg.read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(running - 1)
        if i + 1 < samples:
            time.sleep(interval)
    return max(1, (os.cpu_count() or 1) - int(statistics.median(counts)))


def _env_threads() -> int | None:
    """OMP_NUM_THREADS as the user set it (the first value of a nested list), if it is a positive number."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def configure_threads(threads: int | None = None) -> int:
    """Size every CPU thread pool to ``threads`` (default: OMP_NUM_THREADS when the user set it, else
    ``usable_cpus()``, fewer when other processes keep some of them busy: ``free_cpus()``) and return the number used.

    Why fewer: every parallel op ends at a barrier that waits for its slowest thread, and on an oversubscribed CPU
    that thread is waiting for a time slice. Encoding images with 2 threads on 2 cores next to ~10 runnable threads
    ran at 0.6 images/s; with 1 thread, 4.9 images/s.

    Sets torch's intra-op threads (and one inter-op thread: fusent runs no parallel graph branches), the BLAS /
    OpenMP pools of libraries already loaded (threadpoolctl, e.g. numpy's OpenBLAS), and the environment variables
    child processes and libraries loaded later read. An explicit ``threads`` above the usable CPUs is honoured, with
    a warning: more threads than cores makes every parallel region wait for a descheduled thread.
    """
    import torch

    usable = usable_cpus()
    if threads is None:
        threads = _env_threads() or min(usable, free_cpus() or usable)
        if threads < usable:
            log.debug("%d of %d usable CPUs are busy: using %d threads", usable - threads, usable, threads)
    elif threads < 1:
        raise ValueError(f"threads must be at least 1; got {threads}")
    elif threads > usable:
        log.warning("--threads %d is more than the %d CPUs this process may use: expect contention", threads, usable)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable once, before any inter-op work: already done in this process
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover - comes with scikit-learn
        pass
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    return threads


def onnx_session_options(threads: int | None = None) -> Any:
    """ONNX Runtime session options with ``threads`` intra-op threads (default: torch's, as configured), one
    inter-op thread, and no spinning: ORT's idle workers otherwise spin after each run, taking the cores from the
    torch encoder that runs next (and from any other process)."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
