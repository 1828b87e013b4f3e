"""Benchmarks of exported bundles on the machine at hand (``kgedge bench``); torch-free.

The last stage: imports the runtime, numpy and onnxruntime, never torch.
"""

from kgedge.bench.latency import BenchConfig, LatencyReport, ThreadRun, bench_bundle, bundle_bytes
from kgedge.bench.machine import Bandwidth, machine_info, peak_rss_bytes, read_bandwidth, rss_bytes

__all__ = [
    "Bandwidth",
    "BenchConfig",
    "LatencyReport",
    "ThreadRun",
    "bench_bundle",
    "bundle_bytes",
    "machine_info",
    "peak_rss_bytes",
    "read_bandwidth",
    "rss_bytes",
]
