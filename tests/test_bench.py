"""``kgedge bench`` and ``kgedge.bench``: documented keys, sane values; no timing thresholds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from bundle_factory import TinyBundle, make_archive, tiny  # noqa: F401 (fixture)
from typer.testing import CliRunner

from kgedge.bench import BenchConfig, bench_bundle
from kgedge.cli import app

runner = CliRunner()
DOCUMENTED = ("p50_us", "p95_us", "p99_us", "qps_batch_1", "bundle_bytes", "num_entities", "dim", "profile")
QUICK = ["--queries", "30", "--seconds", "0.05"]


def _files_bytes(bundle: TinyBundle) -> int:
    return sum(p.stat().st_size for p in bundle.path.iterdir() if p.is_file())


def test_cli_json_has_the_documented_keys_with_sane_values(tiny: TinyBundle) -> None:
    result = runner.invoke(app, ["bench", str(tiny.path), "--json", *QUICK])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in DOCUMENTED:
        assert key in report, key
    assert 0 < report["p50_us"] <= report["p95_us"] <= report["p99_us"]
    for batch in (1, 8, 64, 256):
        assert report[f"qps_batch_{batch}"] > 0
    assert report["bundle_bytes"] == _files_bytes(tiny)
    assert report["num_entities"] == len(tiny.entities) and report["dim"] == 8
    assert report["profile"] == "fp32-test" and report["threads"] == 1
    assert report["load_s"] > 0 and report["peak_rss_bytes"] >= report["rss_after_load_bytes"] > 0
    assert [run["threads"] for run in report["runs"]] == [1]
    assert report["machine"]["cores"] >= 1


def test_a_second_thread_count_is_measured_beside_one_thread(tiny: TinyBundle) -> None:
    report = bench_bundle(tiny.path, threads=2, config=BenchConfig(single_queries=20, stage_seconds=0.02,
                                                                   batch_sizes=(1, 4)))
    assert [run.threads for run in report.runs] == [1, 2] and report.threads == 2
    data = report.to_dict()
    assert data["p50_us"] == report.runs[1].p50_us and set(data["runs"][0]["qps"]) == {"1", "4"}
    for run in report.runs:
        assert 0 < run.p50_us <= run.p95_us <= run.p99_us and run.single_queries >= 5
        assert all(q > 0 for q in run.qps.values())


def test_archives_count_the_archive_file_and_the_table_prints(tiny: TinyBundle, tmp_path) -> None:  # noqa: ANN001
    archive = make_archive(tiny.path, tmp_path / "tiny.tar.gz")
    result = runner.invoke(app, ["bench", str(archive), "--json", *QUICK])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["bundle_bytes"] == archive.stat().st_size
    result = runner.invoke(app, ["bench", str(tiny.path), *QUICK])
    assert result.exit_code == 0 and "p50 us" in result.output and "q/s" in result.output


def test_errors_are_one_line(tiny: TinyBundle) -> None:
    result = runner.invoke(app, ["bench", str(tiny.path / "missing")])
    assert result.exit_code == 2 and "no such bundle" in result.output
    result = runner.invoke(app, ["bench", str(tiny.path), "--queries", "0"])
    assert result.exit_code == 2 and "single_queries=0" in result.output


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="batch_sizes"):
        BenchConfig(batch_sizes=())


def test_bench_never_imports_torch(tiny: TinyBundle) -> None:
    code = ("import sys; from kgedge.bench import bench_bundle, BenchConfig; "
            "bench_bundle(sys.argv[1], config=BenchConfig(single_queries=5, stage_seconds=0.01, batch_sizes=(1,))); "
            "bad = sorted(m for m in sys.modules if m.partition('.')[0] in ('torch', 'onnx')); "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code, str(tiny.path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
