"""What a benchmark records about the machine it ran on: CPU, flags, versions, memory, bandwidth.

Standard library and numpy only (onnxruntime for its version), so that it runs on a device.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# /proc/cpuinfo flags that decide which integer kernels onnxruntime can use
INTERESTING_FLAGS = ("sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                     "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key and key not in info:
            info[key] = value.strip()
    return info


def machine_info() -> dict[str, object]:
    """CPU model, the flags that matter for int8 kernels, cores, memory, load and library versions."""
    import onnxruntime as ort

    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return {
        "machine": platform.machine(),
        "cpu": cpu.get("model name") or cpu.get("CPU part") or platform.processor(),
        "cpu_flags": sorted(flags & set(INTERESTING_FLAGS)),
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "platform": platform.platform(),
    }


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (``VmHWM``, else ``ru_maxrss``)."""
    value = _status_bytes("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_bytes() -> int:
    """Current resident memory of this process in bytes (``VmRSS``; the peak where /proc is absent)."""
    value = _status_bytes("VmRSS")
    return value if value is not None else peak_rss_bytes()


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class Bandwidth:
    """Streaming read rate of one core over a buffer.

    Attributes:
        bytes_per_s: the best kernel's median rate (bytes per second).
        buffer_bytes: size of the buffer read (much larger than the last-level cache for DRAM).
        kernels: kernel name -> median bytes per second (the best one is the estimate).
    """

    bytes_per_s: float
    buffer_bytes: int
    kernels: dict[str, float]


def read_bandwidth(buffer_bytes: int = 256 << 20, repeats: int = 7) -> Bandwidth:
    """Measure how fast one thread streams through ``buffer_bytes`` with numpy (read only).

    Several SIMD read kernels are timed (max of float32, bitwise-or of uint64, count of non-zero
    bytes); each touches every byte once and keeps almost nothing, so the fastest is bound by the
    memory system, not by arithmetic. One warm-up pass first (page faults, frequency ramp), then the
    median of ``repeats`` passes per kernel.
    """
    buffer = np.ones(buffer_bytes // 8, dtype=np.float64).view(np.uint8)  # touched: pages are resident
    kernels = {
        "max_f32": lambda: buffer.view(np.float32).max(),
        "or_u64": lambda: np.bitwise_or.reduce(buffer.view(np.uint64)),
        "count_nonzero_u8": lambda: np.count_nonzero(buffer.view(np.bool_)),
    }
    rates = {name: buffer.nbytes / median_seconds(kernel, repeats, warmup=1) for name, kernel in kernels.items()}
    return Bandwidth(max(rates.values()), int(buffer.nbytes), rates)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
