"""Reliability figures: fuzz cases per target, byte flips detected, crash points survived, load held.

Runs, at larger counts than the default test suite, what ``tests/test_fuzz.py`` and
``tests/test_crash.py`` define (the same targets, sweeps, crash points and loads, imported from
there), and writes ``benchmarks/results/reliability.{json,md}``.

    python benchmarks/reliability.py                 # about 15 minutes on 2 shared cores
    python benchmarks/reliability.py --quick         # small counts, a smoke run of the script

All network traffic stays on 127.0.0.1; at most a few processes run at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the tests: tiny tensors, shared cores

import onnxruntime as ort  # noqa: E402
import test_crash as crash  # noqa: E402
import test_fuzz as fuzz  # noqa: E402
from bundle_factory import build_bundle  # noqa: E402

from kgedge import __version__  # noqa: E402
from kgedge.runtime import EdgeModel  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def run_fuzz(root: Path, examples: int) -> dict[str, dict[str, Any]]:
    world = fuzz.open_world(root / "fuzz")
    out = {}
    try:
        for name in fuzz.TARGETS:
            started, failure = time.perf_counter(), None
            try:
                fuzz.run_target(world, name, examples, database=None)
            except Exception as err:  # noqa: BLE001 (a falsified target is a finding: record it, go on)
                failure = f"{type(err).__name__}: {err}"
            out[name] = {"cases": fuzz.CASES[name], "failures": int(failure is not None), "failure": failure,
                         "seconds": round(time.perf_counter() - started, 1)}
            print(f"fuzz {name}: {fuzz.CASES[name]} cases, failure: {failure}", flush=True)
    finally:
        fuzz.close_world(world)
    return out


def run_sweeps(root: Path, stride: int) -> dict[str, Any]:
    bundle = fuzz.export_small_bundle(root / "real")
    files = {p.name: p.stat().st_size for p in sorted(bundle.iterdir())}
    out: dict[str, Any] = {"bundle_files": files, "bundle_bytes": sum(files.values()), "stride": stride}
    for kind in ("flip", "truncate"):
        sweep = fuzz.damage_sweep(bundle, root / f"work-{kind}", kind, stride)
        out[kind] = {"tried": sweep.tried, "refused_naming_the_file": sweep.refused, "harmless": sweep.harmless,
                     "failures": sweep.failures}
        print(f"{kind}: {sweep.tried} tried, {sweep.refused} refused, {sweep.harmless} harmless, "
              f"{len(sweep.failures or [])} failures", flush=True)
    return out


def run_crashes(root: Path, quick: bool) -> dict[str, Any]:
    atomic = {}
    for kind, points in (("file", ["during-write", "before-rename"]), ("directory", ["during-write", "before-swap", "after-swap"])):
        (root / f"atomic-{kind}").mkdir()
        report = crash.kill_atomic_writers(root / f"atomic-{kind}", kind, points, random_kills=3 if quick else 20)
        atomic[kind] = {"tried": report.tried, "survived": report.survived, "leftovers": sorted(set(report.leftovers))}
        print(f"atomic {kind}: {report.survived}/{report.tried} survived", flush=True)
    out: dict[str, Any] = {"atomic": atomic, "runs": []}
    data = crash.write_shop_kg(root / "shop")
    reference = root / "reference.ckpt"
    run = crash.kgedge("none", "train", "--data", data, "--out", reference, *crash.TRAIN, cwd=root)
    _, stderr = run.communicate(timeout=900)
    assert run.returncode == 0, stderr
    points = crash.TRAIN_POINTS[:2] if quick else crash.TRAIN_POINTS
    for i, (name, point, when) in enumerate(points):
        out["runs"].append(crash.crash_training(root / f"train-{i}", data, reference, f"train: {name}", point, when))
        print(f"crash {out['runs'][-1]['point']}: survived={out['runs'][-1]['survived']}", flush=True)
    for i, point in enumerate(["student-write:1", "during-qat"][: 1 if quick else 2]):
        out["runs"].append(crash.crash_compression(root / f"compress-{i}", data, reference, point))
        print(f"crash {out['runs'][-1]['point']}: survived={out['runs'][-1]['survived']}", flush=True)
    for i, point in enumerate(["bundle-write:2", "bundle-swap", "after-swap"][: 1 if quick else 3]):
        out["runs"].append(crash.crash_export(root / f"export-{i}", data, reference, point))
        print(f"crash {out['runs'][-1]['point']}: survived={out['runs'][-1]['survived']}", flush=True)
    return out


def run_load(root: Path, seconds: float) -> dict[str, Any]:
    bundle = build_bundle(root / "load-bundle").path
    threads = crash.hammer_threads(EdgeModel.load(bundle), threads=8, seconds=seconds)
    print(f"threads: {threads['queries']} queries, {threads['errors']} errors", flush=True)
    processes = crash.hammer_processes(bundle, root, processes=3, seconds=seconds)
    print(f"processes: {processes['queries']} queries, {processes['errors']} errors", flush=True)
    serve = crash.serve_load(bundle, clients=4, seconds=seconds)
    print(f"serve: {serve['requests_per_second']} requests/s, {serve['errors']} errors", flush=True)
    return {"threads": threads, "processes": processes, "serve": serve}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# Reliability", "",
             f"kgedge {report['kgedge']}, onnxruntime {m['onnxruntime']}, Python {m['python']}, {m['cpus']} CPUs "
             f"(shared; load average {m['load_average']} at the start). Run: `python benchmarks/reliability.py"
             f"{' --quick' if report['quick'] else ''}` ({report['seconds']:.0f} s).", "",
             "## Hostile inputs (hypothesis, `tests/test_fuzz.py` targets)", "",
             "Only the documented errors may come out (KGFormatError, ProfileError, RecipeError, BundleError, "
             "QueryError; HTTP 4xx); anything else fails the target.", "",
             "| target | cases | failures | seconds |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['cases']} | {r['failures']} | {r['seconds']} |" for name, r in report["fuzz"].items()]
    s = report["sweeps"]
    which = "byte" if s["stride"] == 1 else f"{s['stride']}th byte"
    lines += ["", "## Damaged bundle files", "",
              f"A real exported bundle ({s['bundle_bytes']:,} bytes in {len(s['bundle_files'])} files); every {which} "
              "of every file flipped (XOR 0xFF and XOR 0x01; with a stride they take turns) or the file cut there, "
              "then loaded.", "",
              "| damage | tried | refused, naming the file | harmless | failures |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {kind} | {s[kind]['tried']:,} | {s[kind]['refused_naming_the_file']:,} | {s[kind]['harmless']} | "
              f"{len(s[kind]['failures'])} |" for kind in ("flip", "truncate")]
    lines += ["", "Harmless: the bundle loaded with exactly its original content (a flip in the name of the manifest's "
              "own `manifest_sha256` key, or a cut of the manifest's final newline).", ""]
    c = report["crashes"]
    lines += ["## Crash points (SIGKILL)", "",
              "| crash point | killed | survived | on disk after the kill | leftovers |", "|---|---|---|---|---|"]
    for kind, a in c["atomic"].items():
        hidden = f"{len(a['leftovers'])} hidden `.target-{kind}.<random>.tmp`" if a["leftovers"] else "none"
        lines.append(f"| kgedge.atomic {kind}: exact points + random moments | {a['tried']} | {a['survived']} | "
                     f"complete, old or new | {hidden} |")
    for r in c["runs"]:
        disk = (f"checkpoint epoch {r['checkpoint_epoch']}, resume state epoch {r['resume_epoch']}; resumed to "
                f"epoch {r['resumed_epochs']}, equal to the uninterrupted run: {r['same_as_uninterrupted']}"
                if "resumed_epochs" in r else
                f"previous student intact: {r['intact']}" if "intact" in r else f"{r['bundle']} bundle loads")
        hidden = ", ".join(f"`{n}`" for n in r["leftovers"]) or "none"
        lines.append(f"| {r['point']} | {r['killed']} | {r['survived']} | {disk} | {hidden} |")
    tried = sum(a["tried"] for a in c["atomic"].values()) + len(c["runs"])
    survived = sum(a["survived"] for a in c["atomic"].values()) + sum(bool(r["survived"]) for r in c["runs"])
    lines += ["", f"**Crash points tried: {tried}, survived: {survived}.**", ""]
    t, p, v = report["load"]["threads"], report["load"]["processes"], report["load"]["serve"]
    lines += ["## Load", "",
              "| load | workers | seconds | queries | errors | wrong answers | RSS before → after (KiB) |",
              "|---|---:|---:|---:|---:|---:|---|",
              f"| one EdgeModel, threads | {t['threads']} | {t['seconds']} | {t['queries']:,} | {t['errors']} | "
              f"{t['mismatches']} | {t['rss_before_kib']:,} → {t['rss_after_kib']:,} |",
              f"| one bundle, processes | {p['processes']} | {p['seconds']} | {p['queries']:,} | {p['errors']} | "
              f"{p['mismatches']} | " + "; ".join(f"{c['rss_before_kib']:,} → {c['rss_after_kib']:,}" for c in p["per_process"]) + " |",
              "", f"`kgedge serve` on 127.0.0.1 with {v['clients']} client threads (one connection per request) for "
              f"{v['seconds']} s: **{v['requests_per_second']} requests/s**, {v['requests']:,} requests, "
              f"{v['errors']} errors, still serving after: {v['alive_after']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run of the script")
    parser.add_argument("--examples", type=int, default=None, help="hypothesis cases per fuzz target (default 2000)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of each load (default 5)")
    args = parser.parse_args()
    examples = args.examples or (50 if args.quick else 2000)
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "kgedge": __version__, "quick": args.quick,
        "machine": {"python": platform.python_version(), "onnxruntime": ort.__version__, "cpus": os.cpu_count(),
                    "load_average": round(os.getloadavg()[0], 1)},
    }
    with tempfile.TemporaryDirectory(prefix="kgedge-reliability-") as tmp:
        root = Path(tmp)
        report["fuzz"] = run_fuzz(root, examples)
        report["sweeps"] = run_sweeps(root, 97 if args.quick else 1)
        report["load"] = run_load(root, seconds)
        report["crashes"] = run_crashes(root, args.quick)
    report["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "reliability.md").write_text(markdown(report), encoding="utf-8")
    print(f"wrote {RESULTS / 'reliability.json'} and .md in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
