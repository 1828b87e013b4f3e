"""``bench_bundle``: how fast a bundle answers on this machine, and what it costs in memory.

For each thread count (1, and the profile's or the caller's): a warm-up, then timed single queries
through :meth:`EdgeModel.topk` (the path a device uses; p50/p95/p99 in microseconds), then batched
queries at each batch size (throughput in queries per second, from the median batch time). Load
time, resident memory and the bundle's bytes are recorded once.

Torch-free: imports the runtime, numpy and onnxruntime only.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kgedge.bench.machine import machine_info, peak_rss_bytes, read_bandwidth, rss_bytes
from kgedge.runtime import EdgeModel, SessionSettings, read_bundle
from kgedge.runtime.archive import is_archive

log = logging.getLogger(__name__)

# (stage description, stage number from 1, number of stages)
StageCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BenchConfig:
    """How long and on what a bundle is measured.

    Attributes:
        k: results per query (capped at the entity count).
        warmup: untimed queries before each timed stage (lazy allocations, caches, frequency).
        single_queries: most timed single queries per thread count.
        batch_sizes: batch sizes whose throughput is measured.
        stage_seconds: a stage stops after this many seconds once ``min_runs`` are timed, so that a
            1M-entity bundle on a slow core still finishes.
        min_runs: fewest timed runs per stage.
        seed: the random ``(head, relation)`` queries.
    """

    k: int = 10
    warmup: int = 20
    single_queries: int = 1000
    batch_sizes: tuple[int, ...] = (1, 8, 64, 256)
    stage_seconds: float = 3.0
    min_runs: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "k": self.k >= 1, "warmup": self.warmup >= 0, "single_queries": self.single_queries >= 1,
            "batch_sizes": bool(self.batch_sizes) and all(b >= 1 for b in self.batch_sizes),
            "stage_seconds": self.stage_seconds > 0, "min_runs": self.min_runs >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"BenchConfig.{name}={getattr(self, name)!r} is invalid; allowed: positive values "
                                 "(warmup >= 0), at least one batch size")


@dataclass(frozen=True)
class ThreadRun:
    """Figures at one intra-op thread count.

    Attributes:
        threads: onnxruntime intra-op threads (0 = onnxruntime's default, one per core).
        p50_us, p95_us, p99_us, mean_us: single-query latency in microseconds.
        single_queries: how many single queries were timed.
        qps: batch size -> queries per second (batch size / median batch time).
        batch_runs: batch size -> how many batches were timed.
    """

    threads: int
    p50_us: float
    p95_us: float
    p99_us: float
    mean_us: float
    single_queries: int
    qps: dict[int, float]
    batch_runs: dict[int, int]


@dataclass(frozen=True)
class LatencyReport:
    """What ``kgedge bench`` prints.

    The headline latency and throughput fields are those of the run at ``threads``; ``runs`` holds
    every thread count measured (1 first).

    Attributes:
        bundle_bytes: bytes of the bundle as it lies on disk (every file of a directory, manifest
            included; the archive file itself for a ``.tar``/``.tar.gz``).
        table_bytes: the tables as exported (the manifest's figure; None when it has none).
        load_s: seconds to read, verify and open the bundle (first load).
        rss_before_load_bytes, rss_after_load_bytes: resident memory around the first load.
        peak_rss_bytes: the process's peak resident memory after the queries (runtime + bundle +
            batches), before the optional bandwidth probe.
        limit: with ``measure_limit``: memory bandwidth and the table-read time it implies.
    """

    bundle: str
    profile: str
    model: str
    num_entities: int
    num_relations: int
    dim: int
    table_bytes: int | None
    bundle_bytes: int
    load_s: float
    rss_before_load_bytes: int
    rss_after_load_bytes: int
    peak_rss_bytes: int
    k: int
    threads: int
    runs: tuple[ThreadRun, ...]
    machine: dict[str, object] = field(default_factory=dict)
    limit: dict[str, float] | None = None

    @property
    def headline(self) -> ThreadRun:
        return next(run for run in self.runs if run.threads == self.threads)

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict: the headline figures first (``p50_us``, ``qps_batch_1``, ...)."""
        head = self.headline
        out: dict[str, Any] = {
            "bundle": self.bundle, "profile": self.profile, "model": self.model,
            "num_entities": self.num_entities, "num_relations": self.num_relations, "dim": self.dim,
            "k": self.k, "threads": self.threads,
            "p50_us": head.p50_us, "p95_us": head.p95_us, "p99_us": head.p99_us, "mean_us": head.mean_us,
            **{f"qps_batch_{b}": q for b, q in head.qps.items()},
            "bundle_bytes": self.bundle_bytes, "table_bytes": self.table_bytes, "load_s": self.load_s,
            "rss_before_load_bytes": self.rss_before_load_bytes, "rss_after_load_bytes": self.rss_after_load_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "runs": [{**asdict(run), "qps": {str(b): q for b, q in run.qps.items()},
                      "batch_runs": {str(b): n for b, n in run.batch_runs.items()}} for run in self.runs],
            "machine": self.machine,
        }
        if self.limit is not None:
            out["limit"] = self.limit
        return out


def bundle_bytes(path: Path) -> int:
    """Bytes on disk: the sum of the directory's regular files, or the archive file's size."""
    path = Path(path)
    if is_archive(path):
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and not p.is_symlink())


def _percentile_us(samples_ns: np.ndarray, q: float) -> float:
    return float(np.percentile(samples_ns, q)) / 1e3


Query = tuple[np.ndarray, np.ndarray]


def _time_single(model: EdgeModel, warmup: list[Query], queries: list[Query], config: BenchConfig, k: int) -> np.ndarray:
    """Latency of each single query in nanoseconds (after the untimed ``warmup`` queries); stops early
    once the stage's time is spent."""
    for heads, relations in warmup:
        model.topk(heads, relations, k)
    samples = []
    deadline = time.perf_counter() + config.stage_seconds
    for heads, relations in queries:
        start = time.perf_counter_ns()
        model.topk(heads, relations, k)
        samples.append(time.perf_counter_ns() - start)
        if len(samples) >= config.min_runs and time.perf_counter() > deadline:
            break
    return np.asarray(samples, dtype=np.float64)


def _time_batches(model: EdgeModel, heads: np.ndarray, relations: np.ndarray, batch: int, config: BenchConfig,
                  k: int) -> tuple[float, int]:
    """``(queries per second, batches timed)`` for one batch size, from the median batch time."""
    rng = np.random.default_rng(config.seed + batch)
    starts = rng.integers(0, max(1, len(heads) - batch + 1), size=max(config.min_runs, 2) + 1000)
    for s in starts[:2]:  # warm-up
        model.topk(heads[s:s + batch], relations[s:s + batch], k)
    times = []
    deadline = time.perf_counter() + config.stage_seconds
    for s in starts[2:]:
        start = time.perf_counter()
        model.topk(heads[s:s + batch], relations[s:s + batch], k)
        times.append(time.perf_counter() - start)
        if len(times) >= config.min_runs and time.perf_counter() > deadline:
            break
    return batch / float(np.median(times)), len(times)


def _measure(model: EdgeModel, threads: int, config: BenchConfig, k: int, heads: np.ndarray, relations: np.ndarray,
             stage: Callable[[str], None]) -> ThreadRun:
    stage(f"threads={threads}: single queries")
    singles = [(heads[i:i + 1], relations[i:i + 1]) for i in range(min(len(heads), config.warmup + config.single_queries))]
    samples = _time_single(model, singles[:config.warmup], singles[config.warmup:] or singles, config, k)
    qps, runs = {}, {}
    for batch in config.batch_sizes:
        stage(f"threads={threads}: batch {batch}")
        qps[batch], runs[batch] = _time_batches(model, heads, relations, batch, config, k)
    return ThreadRun(threads, _percentile_us(samples, 50), _percentile_us(samples, 95), _percentile_us(samples, 99),
                     float(samples.mean()) / 1e3, int(len(samples)), qps, runs)


def bench_bundle(
    path: Path,
    threads: int | None = None,
    config: BenchConfig = BenchConfig(),
    measure_limit: bool = False,
    on_stage: StageCallback | None = None,
) -> LatencyReport:
    """Measure a bundle directory or archive at 1 thread and at ``threads``.

    Args:
        threads: intra-op threads of the second run (None: the bundle profile's setting; 0: one per
            core). When it is 1, a single run is made.
        measure_limit: also measure this core's streaming read bandwidth (numpy, ~1-2 s) and report
            the time to read the entity table once at that rate (``limit.table_read_us``), the floor
            of a single query's latency on this machine.
        on_stage: called at the start of each stage with ``(description, number, total)``.

    Raises:
        BundleError: the bundle cannot be loaded. FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    rss_before = rss_bytes()
    started = time.perf_counter()
    bundle = read_bundle(path)
    settings = SessionSettings.from_manifest(bundle.manifest["session"], str(path))
    model = EdgeModel(bundle, replace(settings, intra_op_threads=1))
    del bundle  # as EdgeModel.load: the verified file bytes are not kept once the session holds the graph
    gc.collect()
    load_s = time.perf_counter() - started
    rss_after = rss_bytes()
    manifest = model.manifest
    wanted = settings.intra_op_threads if threads is None else threads
    counts = [1] if wanted == 1 else [1, wanted]
    total = len(counts) * (1 + len(config.batch_sizes)) + int(measure_limit)
    done = 0

    def stage(description: str) -> None:
        nonlocal done
        done += 1
        if on_stage is not None:
            on_stage(description, done, total)

    rng = np.random.default_rng(config.seed)
    count = max(config.warmup + config.single_queries, max(config.batch_sizes) * 4)
    heads = rng.integers(0, model.num_entities, count).astype(np.int64)
    relations = rng.integers(0, 2 * model.num_relations, count).astype(np.int64)
    k = min(config.k, model.num_entities)
    runs = []
    for i, n in enumerate(counts):
        if i:  # one session at a time: memory figures stay those of one loaded bundle
            del model
            gc.collect()
            model = EdgeModel.load(path, intra_op_threads=n)
        runs.append(_measure(model, n, config, k, heads, relations, stage))
        log.info("threads=%d: p50 %.1f us, %s", n, runs[-1].p50_us, runs[-1].qps)
    sizes = manifest.get("sizes", {}) if isinstance(manifest.get("sizes"), dict) else {}
    table_bytes = sizes.get("table_bytes") if isinstance(sizes.get("table_bytes"), int) else None
    peak = peak_rss_bytes()  # before the bandwidth probe's buffer
    limit = None
    if measure_limit:
        stage("memory bandwidth")
        bandwidth = read_bandwidth()
        limit = {"read_bandwidth_bytes_per_s": bandwidth.bytes_per_s, "bandwidth_buffer_bytes": bandwidth.buffer_bytes}
        if table_bytes:
            limit["table_read_us"] = table_bytes / bandwidth.bytes_per_s * 1e6
            limit["p50_over_table_read"] = runs[0].p50_us / limit["table_read_us"]
    profile = manifest.get("profile", {})
    model_info = manifest.get("model", {})
    return LatencyReport(
        bundle=str(path),
        profile=str(profile.get("name", "?")) if isinstance(profile, dict) else "?",
        model=str(model_info.get("name", "?")),
        num_entities=model.num_entities,
        num_relations=model.num_relations,
        dim=int(model_info.get("dim", 0)),
        table_bytes=table_bytes,
        bundle_bytes=bundle_bytes(path),
        load_s=load_s,
        rss_before_load_bytes=rss_before,
        rss_after_load_bytes=rss_after,
        peak_rss_bytes=peak,
        k=k,
        threads=counts[-1],
        runs=tuple(runs),
        machine=machine_info(),
        limit=limit,
    )
