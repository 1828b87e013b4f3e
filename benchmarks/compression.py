"""Compression quality (issue: compression): bytes vs filtered test MRR of students, measured on the
exported bundle, against a ComplEx-256 fp32 teacher and against the same student trained directly.

    python benchmarks/compression.py                       # umls, nations, demo
    python benchmarks/compression.py --data umls --techniques   # + every technique alone and combined
    python benchmarks/compression.py --data wordnet-rr --budget 600
    python benchmarks/compression.py --data nations --seeds 5      # mean and range over seeds
    python benchmarks/compression.py --data umls nations --seeds 3 --plans tiny-int4 tiny-int8   # the two 64x recipes
    python benchmarks/compression.py --data umls nations --plans default wide-int4   # the two 32x recipes side by side
    python benchmarks/compression.py --data umls nations demo --plans auto   # the CLI's default: the best of three
    python benchmarks/compression.py --data wordnet-rr --budget 900 --plans auto direct-wide

Nations has 201 test triples, so one seed's MRR moves by about a point: ``--seeds`` repeats every
student with seeds 0..S-1 (the teacher stays the same) and reports the mean and the range.

Bytes are the entity and relation tables as the exporter stores them (codes + float32 scales); the
teacher's are its fp32 tables. Writes benchmarks/results/compression.{json,md} (or compression_<data>).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import machine, markdown_table, write_results

from kgedge.compress.pipeline import run_recipe
from kgedge.compress.recipe import Recipe, load_recipe
from kgedge.compress.size import table_bytes
from kgedge.data.sources import load_data
from kgedge.evaluate import evaluate_link_prediction
from kgedge.export import export_bundle, resolve_profile
from kgedge.export.bundle import graph_spec
from kgedge.models import ModelConfig
from kgedge.runtime import EdgeModel
from kgedge.train.checkpoint import Checkpoint, Vocabulary, load_checkpoint
from kgedge.train.config import default_train_config
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"


def teacher_for(data: str, dim: int, budget: float):  # noqa: ANN201
    kg = load_data(data)
    path = CACHE / f"teacher-{data}-complex{dim}.ckpt"
    if not path.is_file():
        config = ModelConfig(model="complex", num_entities=kg.num_entities, num_relations=2 * kg.num_relations, dim=dim)
        overrides = {"batch_size": 1000} if kg.num_entities > 10_000 else {}
        train_model(kg, config, default_train_config("complex", max_time_s=budget, **overrides), out=path)
    return kg, load_checkpoint(path)


def exported_mrr(model, kg, profile: str) -> tuple[float, int]:  # noqa: ANN001
    """Filtered test MRR of the model as the device answers it, and the exported table bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpoint(model=model, vocab=Vocabulary.of(kg))
        export_bundle(ckpt, profile, Path(tmp) / "bundle", kg=kg)
        edge = EdgeModel.load(Path(tmp) / "bundle")
        mrr = evaluate_link_prediction(edge.score_all, kg, "test")["mrr"]
        chosen = resolve_profile(profile)
        # the graph's own tables: a factored (low-rank) entity table counts U at the profile's bits and V in float32
        return mrr, graph_spec(ckpt).table_bytes(chosen.table_bits if chosen.quantized else None)


def recipe(name: str, steps: list[dict[str, object]], bits: int = 8) -> Recipe:
    return Recipe.from_dict({"name": name, "export_bits": bits, "steps": steps})


def trained_directly(distilled: Recipe, name: str) -> Recipe:
    """``distilled``'s student (same steps, dimension and bits) trained without the teacher: random
    initialisation and no soft loss."""
    first, *rest = distilled.steps
    return recipe(name, [{**first.settings, "kind": first.kind, "alpha": 0.0, "init": "random"},
                         *({**s.settings, "kind": s.kind} for s in rest)], bits=distilled.export_bits)


def measure(label: str, teacher, kg, rec: Recipe, profile: str, teacher_mrr: float, teacher_bytes: int,  # noqa: ANN001
            budget: float, seeds: int = 1) -> dict[str, object]:
    """One row: the student of ``rec`` measured on its exported bundle; with ``seeds`` > 1, the mean
    over seeds 0..seeds-1 (``pct_range``: the lowest and highest seed)."""
    torch_mrrs, exported, seconds, kept = [], [], [], []
    for seed in range(seeds):
        started = time.perf_counter()
        result = run_recipe(teacher.model, kg, rec, seed=seed, max_time_s=budget)
        seconds.append(time.perf_counter() - started)
        if rec.choose_from:  # a choice (auto): the kept student is exported at its own bits, as `kgedge export` does
            profile = "int4" if result.export_bits == 4 else "x86-avx2"
            kept.append(f"{result.recipe} (valid " + " vs ".join(f"{c.valid_mrr:.4f}" for c in result.candidates) + ")")
        mrr, size = exported_mrr(result.model, kg, profile)
        torch_mrrs.append(result.steps[-1].mrr)
        exported.append(mrr)
    config = result.model.config
    rank = config.options.get("entity_rank")  # a factored (low-rank) entity table
    pct = [100 * m / teacher_mrr for m in exported]
    row = {"data": kg.name, "variant": label, "student": f"{config.model}-{config.dim}" + (f" r{rank}" if rank else ""),
           "profile": profile, "bytes": size, "x_smaller": round(teacher_bytes / size, 1),
           "mrr_torch": sum(torch_mrrs) / seeds, "mrr_exported": sum(exported) / seeds, "pct_teacher": sum(pct) / seeds,
           "compress_s": round(sum(seconds) / seeds, 1)}
    if seeds > 1:
        row.update(seeds=seeds, pct_range=f"{min(pct):.1f}-{max(pct):.1f}")
    if kept:
        row["kept"] = "; ".join(kept)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["umls", "nations", "demo"])
    parser.add_argument("--teacher-dim", type=int, default=256)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per training stage at most")
    parser.add_argument("--techniques", action="store_true", help="every technique alone and combined")
    parser.add_argument("--seeds", type=int, default=1, help="repeat every student with this many seeds; mean and range")
    parser.add_argument("--plans", nargs="+",
                        choices=("auto", "default", "direct", "direct-wide", "tiny-int4", "tiny-int8", "wide-int4",
                                 "wide-int4-hard"),
                        help="only these of the standard plans (all by default); the results file is named after them")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    for data in args.data:
        kg, teacher = teacher_for(data, args.teacher_dim, max(args.budget, 1800.0 if data == "wordnet-rr" else 0))
        teacher_mrr = evaluate_link_prediction(model_scorer(teacher.model), kg, "test")["mrr"]
        teacher_bytes = table_bytes(teacher.model, None)
        rows.append({"data": data, "variant": "teacher fp32", "student": f"complex-{args.teacher_dim}", "profile": "-",
                     "bytes": teacher_bytes, "x_smaller": 1.0, "mrr_torch": teacher_mrr, "mrr_exported": teacher_mrr,
                     "pct_teacher": 100.0, "compress_s": 0.0})
        default, wide = load_recipe("default"), load_recipe("wide-int4")
        standard = {"default": ("default recipe (distil 24 + QAT8)", default, "x86-avx2"),
                    "direct": ("same student trained directly (no teacher)", trained_directly(default, "direct"),
                               "x86-avx2"),
                    "tiny-int4": ("tiny-int4 (distil 28 + QAT4)", load_recipe("tiny-int4"), "int4"),
                    "tiny-int8": ("tiny-int8 (distil 14 + QAT8)", load_recipe("tiny-int8"), "x86-avx2"),
                    "wide-int4": ("wide-int4 (distil 60 + QAT4, 32x)", wide, "int4"),
                    "wide-int4-hard": ("wide-int4-hard (teacher init 60, hard labels + QAT4, 32x)",
                                       load_recipe("wide-int4-hard"), "int4"),
                    "direct-wide": ("wide student trained directly (no teacher)", trained_directly(wide, "direct-wide"),
                                    "int4"),
                    # the CLI's default: the 32x recipes, the best by validation MRR kept (profile: its bits)
                    "auto": ("auto (the 32x recipes, by validation MRR)", load_recipe("auto"), "x86-avx2")}
        every = ["default", "direct", "tiny-int4", "tiny-int8"]
        plans = [standard[name] for name in (args.plans or every)]
        if args.techniques:
            d24 = {"kind": "distill", "dim": 24}
            plans += [
                ("distil 24 only (fp32 export)", recipe("d", [d24], 32), "portable"),
                ("QAT int8 of the teacher only", recipe("q", [{"kind": "qat", "bits": 8}]), "x86-avx2"),
                ("prune dims 256->24 + fine-tune (distilled)", recipe("p", [{"kind": "prune_dims", "keep": 24}], 32), "portable"),
                ("magnitude prune 50% (sparsity only)", recipe("m", [{"kind": "prune_magnitude", "sparsity": 0.5}], 32), "portable"),
                ("distil 32 -> prune 24 -> QAT8", load_recipe("distill-prune-qat"), "x86-avx2"),
                ("distil 16 + QAT8 (64x)", recipe("d16", [{"kind": "distill", "dim": 16}, {"kind": "qat", "bits": 8}]), "x86-avx2"),
                ("lowrank 24 of the teacher + fine-tune (fp32 export)",
                 recipe("lr", [{"kind": "lowrank", "rank": 24}], 32), "portable"),
                ("lowrank 24 of the teacher + QAT8", load_recipe("lowrank-qat"), "x86-avx2"),
                ("distil 32 -> lowrank 16 -> QAT8",
                 recipe("dlq", [{"kind": "distill", "dim": 32}, {"kind": "lowrank", "rank": 16},
                                {"kind": "qat", "bits": 8}]), "x86-avx2"),
            ]
        for label, rec, profile in plans:
            rows.append(measure(label, teacher, kg, rec, profile, teacher_mrr, teacher_bytes, args.budget, args.seeds))
    name = "compression" if args.data == ["umls", "nations", "demo"] else "compression_" + "_".join(args.data)
    if args.plans:
        name += "_" + "_".join(args.plans)
    if args.seeds > 1:
        name += f"_seeds{args.seeds}"
    md = ("# Compression: students measured on the exported bundle\n\n" + markdown_table(rows)
          + "\n\n`pct_teacher` = exported student's filtered test MRR / the fp32 teacher's (torch).\n\nMachine: "
          + str(machine()))
    write_results(name, {"machine": machine(), "rows": rows}, md)


if __name__ == "__main__":
    main()
