"""Which student family should ``student = "auto"`` distil into? The teacher's own, or ComplEx?

For each teacher family that is not ComplEx (TransE, DistMult, RotatE), trained with defaults at dim 256
on UMLS, Nations, Kinships (when the pykeen wheel ships it) and the demo KG, the ``default`` recipe's
steps (distil for up to 200 epochs, then int8 QAT for 30) are run twice at the same reals per entity row:
into a student of the teacher's family and into a ComplEx student of 24 complex dimensions (48 reals).
Filtered test MRR of the final (int8 QAT) student, bytes as exported, seconds per step.

    python benchmarks/student_family.py              # ~25 min on 2 cores
    python benchmarks/student_family.py --data umls  # one KG

Writes benchmarks/results/student_family.{json,md}.
"""

from __future__ import annotations

import argparse
import time

from common import machine, markdown_table, real_datasets, write_results

from kgedge.compress.pipeline import run_recipe
from kgedge.compress.recipe import Recipe
from kgedge.data.sources import load_data
from kgedge.models import ModelConfig, resolve
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.trainer import train_model

TEACHERS = ("transe", "distmult", "rotate")
COMPLEX_DIM = 24  # the default recipe's student: 48 reals per row
TEACHER_DIM = 256


def recipe(student: str, dim: int) -> Recipe:
    return Recipe.from_dict({"name": f"default-{student}{dim}", "export_bits": 8, "steps": [
        {"kind": "distill", "student": student, "dim": dim, "epochs": 200},
        {"kind": "qat", "bits": 8, "epochs": 30}]})


def run(data: str, teacher_name: str, teacher_budget: float, step_budget: float) -> list[dict[str, object]]:
    kg = load_data(data)
    config = ModelConfig(model=teacher_name, num_entities=kg.num_entities, num_relations=2 * kg.num_relations,
                         dim=TEACHER_DIM, **default_model_options(teacher_name))
    teacher = train_model(kg, config, default_train_config(teacher_name, max_time_s=teacher_budget, seed=0)).model.eval()
    # the same reals per entity row: a complex dimension is two reals
    own_dim = COMPLEX_DIM if resolve(teacher_name).complex_valued else 2 * COMPLEX_DIM
    rows = []
    for student, dim in ((teacher_name, own_dim), ("complex", COMPLEX_DIM)):
        started = time.perf_counter()
        result = run_recipe(teacher, kg, recipe(student, dim), seed=0, max_time_s=step_budget)
        last = result.steps[-1]
        row = {"data": data, "teacher": teacher_name, "teacher_mrr": result.teacher["mrr"], "student": student,
               "dim": dim, "bytes": last.bytes, "distill_mrr": result.steps[0].mrr, "int8_qat_mrr": last.mrr,
               "hits_at_10": last.hits_at_10, "seconds": round(time.perf_counter() - started, 1)}
        print(row, flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", default=None, help="KGs (default: the real ones and demo)")
    parser.add_argument("--teacher-budget", type=float, default=300.0, help="teacher training seconds at most")
    parser.add_argument("--step-budget", type=float, default=150.0, help="seconds per recipe step at most")
    args = parser.parse_args()
    datasets = args.data or [*real_datasets(), "demo"]
    started = time.time()
    rows = [row for data in datasets for teacher in TEACHERS
            for row in run(data, teacher, args.teacher_budget, args.step_budget)]
    pairs = []
    for own, cplx in zip(rows[::2], rows[1::2], strict=True):
        pairs.append({"data": own["data"], "teacher": own["teacher"], "teacher MRR": own["teacher_mrr"],
                      "own-family student": f"{own['student']} {own['dim']}", "own MRR": own["int8_qat_mrr"],
                      "ComplEx-24 MRR": cplx["int8_qat_mrr"], "ComplEx - own": cplx["int8_qat_mrr"] - own["int8_qat_mrr"],
                      "bytes own / ComplEx": f"{own['bytes']:,} / {cplx['bytes']:,}",
                      "seconds own / ComplEx": f"{own['seconds']:.0f} / {cplx['seconds']:.0f}"})
    wins = sum(p["ComplEx - own"] >= -0.005 for p in pairs)
    markdown = "\n".join([
        "# Student family: the teacher's own or ComplEx (the default recipe's steps)", "",
        f"`python benchmarks/student_family.py` in {(time.time() - started) / 60:.0f} min; machine: {machine()}.",
        f"Teachers: defaults, dim {TEACHER_DIM}, at most {args.teacher_budget:.0f} s. Students: distil (200 epochs) then "
        f"int8 QAT (30 epochs), at most {args.step_budget:.0f} s per step, seed 0, the same reals per entity row "
        "(ComplEx 24 = 48 reals; RotatE 24 = 48 reals; TransE and DistMult 48). MRR: filtered test MRR of the int8 "
        "QAT student.", "",
        markdown_table(pairs), "",
        f"ComplEx matched (within 0.005) or beat the teacher's own family in {wins} of {len(pairs)} pairs.",
    ])
    write_results("student_family", {"machine": machine(), "args": vars(args), "rows": rows, "pairs": pairs}, markdown)


if __name__ == "__main__":
    main()
