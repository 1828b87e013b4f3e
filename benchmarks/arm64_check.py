"""Run by ``benchmarks/arm64_emulated.sh``: the arm64 bundle answers the same on aarch64 as on x86.

Three steps, each a sub-command:

* ``prepare`` (x86, needs kgedge[train]): train a small ComplEx on UMLS (cached), export it with the
  ``arm64`` profile, and record on x86 the top-k ids of every test query (both directions) through
  ``EdgeModel.topk``, twice: with the bundle's own graph on this CPU's onnxruntime, and with the
  exact-integer twin of the graph (``build_graph(..., emulate=True)``: the integer products in
  float, exact), i.e. what an aarch64 dot-product kernel computes.
* ``answer`` (aarch64 under qemu; numpy + onnxruntime + kgedge.runtime only): the same queries.
* ``compare`` (x86): ids equal yes/no with counts -> ``benchmarks/results/arm64_emulated.{json,md}``.

Emulated timings are recorded only to size a CI step; they are not performance figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
K = 10
SETS = ("plain", "exclude_seen")
# arm64: the profile under test (s8 table). x86-avx2: the same 8-bit codes stored as u8, a control
# whose integer kernel is exact on both CPUs.
PROFILES = ("arm64", "x86-avx2")


def _answers(model, heads: np.ndarray, relations: np.ndarray) -> dict[str, np.ndarray]:  # noqa: ANN001
    out = {}
    for name in SETS:
        ids, scores = model.topk(heads, relations, K, exclude_seen=name == "exclude_seen")
        out[f"{name}_ids"], out[f"{name}_scores"] = ids, scores
    return out


def prepare(work: Path) -> None:
    import dataclasses

    import torch

    from kgedge.data.sources import load_data
    from kgedge.export import export_bundle, resolve_profile
    from kgedge.export.bundle import graph_spec
    from kgedge.export.graph import build_graph
    from kgedge.models import ModelConfig
    from kgedge.runtime import EdgeModel, SessionSettings, read_bundle
    from kgedge.train.checkpoint import load_checkpoint
    from kgedge.train.config import default_train_config
    from kgedge.train.trainer import train_model

    torch.set_num_threads(1)
    kg = load_data("umls")
    checkpoint_path = work / "umls-complex32.ckpt"
    if not checkpoint_path.is_file():
        config = default_train_config("complex", max_time_s=30.0, seed=0, eval_every=2)
        model_config = ModelConfig("complex", kg.num_entities, 2 * kg.num_relations, dim=32)
        train_model(kg, model_config, config, out=checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    queries = kg.with_reciprocals(kg.test)
    heads, relations = queries[:, 0].astype(np.int64), queries[:, 1].astype(np.int64)
    np.savez(work / "queries.npz", heads=heads, relations=relations)
    meta = {"data": kg.name, "model": "complex", "dim": 32, "num_entities": kg.num_entities,
            "queries": int(len(heads)), "k": K, "validation": {}}
    for name in PROFILES:
        profile = resolve_profile(name)
        bundle_dir = work / f"bundle-{name}"
        result = export_bundle(checkpoint, profile, bundle_dir, kg=kg, overwrite=True)
        x86 = _answers(EdgeModel.load(bundle_dir), heads, relations)
        # the exact-integer twin through the same runtime path: what a non-saturating kernel returns
        bundle = read_bundle(bundle_dir)
        exact_graph = build_graph(graph_spec(checkpoint), profile, emulate=True).SerializeToString()
        settings = SessionSettings.from_manifest(bundle.manifest["session"], str(bundle_dir))
        exact = _answers(EdgeModel(dataclasses.replace(bundle, model=exact_graph), settings), heads, relations)
        np.savez(work / f"x86-{name}.npz", **x86)
        np.savez(work / f"exact-{name}.npz", **exact)
        meta["validation"][name] = result.manifest["validation"]
    (work / "prepare.json").write_text(json.dumps(meta, indent=2, default=str))
    print(f"[arm64] x86 side ready: {len(heads)} queries, bundle {bundle_dir}", file=sys.stderr)


def answer(work: Path) -> None:
    import onnxruntime as ort

    from kgedge.runtime import EdgeModel

    q = np.load(work / "queries.npz")
    timings = {}
    for name in PROFILES:
        started = time.perf_counter()
        model = EdgeModel.load(work / f"bundle-{name}")
        loaded = time.perf_counter()
        np.savez(work / f"aarch64-{name}.npz", **_answers(model, q["heads"], q["relations"]))
        timings[name] = {"emulated_load_s": loaded - started, "emulated_query_s": time.perf_counter() - loaded}
    info = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": ort.__version__, "torch_imported": "torch" in sys.modules, "timings": timings}
    (work / "arm64.json").write_text(json.dumps(info, indent=2))
    print(f"[arm64] answered on {info['machine']}: {info}", file=sys.stderr)


def _agreement(a: dict, b: dict, name: str) -> dict[str, object]:
    ids_a, ids_b = a[f"{name}_ids"], b[f"{name}_ids"]
    same_rows = np.all(ids_a == ids_b, axis=1)
    same_sets = np.array([set(x) == set(y) for x, y in zip(ids_a.tolist(), ids_b.tolist())])
    overlap = np.mean([len(set(x) & set(y)) / K for x, y in zip(ids_a.tolist(), ids_b.tolist())])
    finite = np.isfinite(a[f"{name}_scores"]) & np.isfinite(b[f"{name}_scores"])
    diff = np.abs(a[f"{name}_scores"] - b[f"{name}_scores"])[finite]
    return {"queries": int(len(ids_a)), "ids_equal": bool(same_rows.all()), "rows_equal": int(same_rows.sum()),
            "rows_same_set": int(same_sets.sum()), "mean_topk_overlap": float(overlap),
            "max_abs_score_diff": float(diff.max()) if diff.size else 0.0}


def compare(work: Path, qemu_cpu: str, check: bool = False) -> None:
    import onnxruntime as ort

    from kgedge.bench.machine import machine_info

    meta = json.loads((work / "prepare.json").read_text())
    arm_info = json.loads((work / "arm64.json").read_text())
    result: dict[str, object] = {
        "question": "does the arm64-profile bundle run on aarch64 and return the x86 top-k ids for the same queries?",
        "bundle": meta, "k": K, "qemu_cpu": qemu_cpu,
        "x86": {**machine_info(), "onnxruntime": ort.__version__},
        "aarch64_emulated": arm_info,
        "note": "timings under qemu user-mode emulation are not performance figures",
    }
    comparisons = {}
    for name in PROFILES:
        arm, x86, exact = (dict(np.load(work / f"{side}-{name}.npz")) for side in ("aarch64", "x86", "exact"))
        comparisons[name] = {
            "aarch64_vs_x86": {s: _agreement(arm, x86, s) for s in SETS},
            "aarch64_vs_exact_integer": {s: _agreement(arm, exact, s) for s in SETS},
            "x86_vs_exact_integer": {s: _agreement(x86, exact, s) for s in SETS},
        }
    result["comparisons"] = comparisons
    arm64 = comparisons["arm64"]
    result["ids_equal"] = all(arm64["aarch64_vs_x86"][s]["ids_equal"] for s in SETS)
    result["ids_equal_exact_integer"] = all(arm64["aarch64_vs_exact_integer"][s]["ids_equal"] for s in SETS)
    result["control_ids_equal"] = all(comparisons["x86-avx2"]["aarch64_vs_x86"][s]["ids_equal"] for s in SETS)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "arm64_emulated.json").write_text(json.dumps(result, indent=2) + "\n")
    yes = {True: "yes", False: "no"}
    validation = meta["validation"]["arm64"]
    lines = [
        "# arm64 bundle under emulation", "",
        f"Model: `{meta['model']}` dim {meta['dim']} trained on {meta['data']} ({meta['num_entities']} entities), "
        f"exported on x86 with the `arm64` profile (s8 table; validated by integer emulation: top-{validation['topk']} "
        f"overlap with fp32 {validation['topk_overlap']:.4f}, MRR drop {100 * (validation['mrr_drop'] or 0):.2f}%) "
        "and, as a control, with `x86-avx2` (the same 8-bit codes stored as u8).",
        f"Queries: every test triple in both directions ({meta['queries']}), top-{K}, without and with `exclude_seen`.",
        f"aarch64: CPython {arm_info['python']}, numpy {arm_info['numpy']}, onnxruntime {arm_info['onnxruntime']} "
        f"under `qemu-aarch64-static` with `QEMU_CPU={qemu_cpu}`; torch imported: {arm_info['torch_imported']}.",
        f"x86: onnxruntime {ort.__version__} on {result['x86']['cpu']} ({', '.join(result['x86']['cpu_flags'])}).", "",
        f"* **arm64 bundle, aarch64 ids equal to x86 ids: {yes[result['ids_equal']]}**",
        f"* **arm64 bundle, aarch64 ids equal to the exact integer result: {yes[result['ids_equal_exact_integer']]}**",
        f"* control (x86-avx2 bundle), aarch64 ids equal to x86 ids: {yes[result['control_ids_equal']]}", "",
        "| bundle | comparison | query set | queries | rows with equal ids | same top-k set | mean top-k overlap | max score diff |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in PROFILES:
        for key, label in (("aarch64_vs_x86", "aarch64 vs x86"), ("aarch64_vs_exact_integer", "aarch64 vs exact integer"),
                           ("x86_vs_exact_integer", "x86 vs exact integer")):
            for s in SETS:
                a = comparisons[name][key][s]
                lines.append(f"| {name} | {label} | {s} | {a['queries']} | {a['rows_equal']} | {a['rows_same_set']} | "
                             f"{a['mean_topk_overlap']:.4f} | {a['max_abs_score_diff']:.2e} |")
    if not result["ids_equal"] and result["ids_equal_exact_integer"]:
        lines += ["", "Why the arm64 bundle's x86 ids differ: on this CPU (AVX2, no VNNI) onnxruntime's u8 x s8 "
                  "`MatMulInteger` kernel adds pairs of products in 16 bits and saturates (2 x 255 x 127 > 32767), "
                  "so x86 computes other scores for the same s8 table; aarch64's dot-product kernel accumulates in "
                  "32 bits and returns exactly the integer result. The arm64 bundle is correct on its target; "
                  "x86 must not serve it (use the x86-avx2 bundle there, whose ids agree on both CPUs)."]
    timing = ", ".join(f"{n}: load {t['emulated_load_s']:.1f} s, queries {t['emulated_query_s']:.1f} s"
                       for n, t in arm_info["timings"].items())
    lines += ["", f"Emulated timings ({timing}) are emulation, **not performance figures**; the whole script takes "
              "about a minute once the aarch64 root is cached; `.ci/run` runs it with `ARM64_CHECK=1`.",
              "", "Reproduce: `bash benchmarks/arm64_emulated.sh` (root for apt the first time; the aarch64 root is "
              "cached under `.cache/arm64-root`)."]
    (RESULTS / "arm64_emulated.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if check and not (result["ids_equal_exact_integer"] and result["control_ids_equal"]):
        sys.exit("arm64 check failed: the emulated aarch64 ids differ from the exact integer result "
                 "(arm64 bundle) or from x86 (x86-avx2 bundle); see benchmarks/results/arm64_emulated.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "answer", "compare"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--qemu-cpu", default="neoverse-n1")
    parser.add_argument("--check", action="store_true",
                        help="compare: exit 1 unless aarch64 returns the exact integer ids (arm64 bundle) and the x86 "
                             "ids (x86-avx2 bundle): what CI runs")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        prepare(args.work)
    elif args.step == "answer":
        answer(args.work)
    else:
        compare(args.work, args.qemu_cpu, args.check)


if __name__ == "__main__":
    main()
