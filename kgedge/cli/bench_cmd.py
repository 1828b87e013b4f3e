"""``kgedge bench``: latency, throughput and memory of a bundle on this machine (no torch)."""

from __future__ import annotations

from pathlib import Path

import typer

from kgedge.cli.common import print_json, print_table, progress_bar, user_errors


def bench(
    bundle: Path = typer.Argument(..., help="A bundle directory made by `kgedge export`, or a .tar/.tar.gz of one."),
    threads: int | None = typer.Option(
        None, "--threads", help="Threads of the second run (default: the bundle profile's; 0 = all cores). "
        "A run at 1 thread is always made."),
    k: int = typer.Option(10, "-k", "--k", help="Results per query."),
    queries: int = typer.Option(1000, "--queries", help="Most timed single queries per thread count."),
    seconds: float = typer.Option(3.0, "--seconds", help="Time budget of each stage once a few runs are timed."),
    limit: bool = typer.Option(False, "--limit", help="Also measure memory bandwidth (a 256 MiB read, ~2 s) and the table-read floor."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (p50_us, p95_us, p99_us, qps_batch_1, ...)."),
) -> None:
    """Time single and batched queries of a bundle (warm-up first) and report load time and memory."""
    from kgedge.bench import BenchConfig, bench_bundle

    with user_errors():
        config = BenchConfig(k=k, single_queries=queries, stage_seconds=seconds)
        with progress_bar() as bar:
            task = bar.add_task("bench", total=None, info="")

            def on_stage(description: str, number: int, total: int) -> None:
                bar.update(task, total=total, completed=number - 1, info=description)

            report = bench_bundle(bundle, threads=threads, config=config, measure_limit=limit, on_stage=on_stage)
    if json_out:
        print_json(report.to_dict())
        return
    mib = 1 << 20
    print_table([
        {"field": "profile / model", "value": f"{report.profile} / {report.model} (dim {report.dim})"},
        {"field": "entities", "value": f"{report.num_entities:,}"},
        {"field": "bundle bytes", "value": f"{report.bundle_bytes:,} ({report.bundle_bytes / mib:.1f} MiB)"},
        {"field": "load", "value": f"{report.load_s * 1e3:.0f} ms"},
        {"field": "RSS added by the load",
         "value": f"{(report.rss_after_load_bytes - report.rss_before_load_bytes) / mib:.1f} MiB"},
        {"field": "peak RSS", "value": f"{report.peak_rss_bytes / mib:.1f} MiB"},
    ], title=str(report.bundle))
    rows = [{"threads": run.threads if run.threads else "auto", "p50 us": round(run.p50_us), "p95 us": round(run.p95_us),
             "p99 us": round(run.p99_us), **{f"b={b} q/s": round(q) for b, q in run.qps.items()}} for run in report.runs]
    print_table(rows, title=f"top-{report.k}: single-query latency, batched queries/s")
    if report.limit is not None and "table_read_us" in report.limit:
        typer.echo(f"memory bandwidth {report.limit['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s: reading the table "
                   f"takes {report.limit['table_read_us']:.1f} us; p50 at 1 thread is "
                   f"{report.limit['p50_over_table_read']:.2f}x that")


def register(app: typer.Typer) -> None:
    app.command()(bench)
