"""Distillation with the teacher in every step (``full``) against its answers cached once (``cached``),
at the same wall-clock budget (issue: compression).

    python benchmarks/distill_cache.py                            # wordnet-rr, dim 60, 600 s each
    python benchmarks/distill_cache.py --data umls nations --budget 60

The student is the ``wide-int4`` recipe's distillation step (ComplEx, 60 complex dims, initialised
from the teacher); only ``candidates`` differs (``hard``: no soft loss at all, alpha 0). The budget
bounds the training steps; the cached run builds its cache before them (its ``seconds`` show it).
The teacher is the one ``benchmarks/compression.py`` trains and keeps in ``.cache/bench``. Writes
``benchmarks/results/distill_cache_<data>.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

from common import machine, markdown_table, write_results
from compression import teacher_for

from kgedge.compress.pipeline import run_recipe
from kgedge.compress.recipe import Recipe
from kgedge.evaluate import evaluate_link_prediction
from kgedge.train.scorer import model_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["wordnet-rr"])
    parser.add_argument("--dim", type=int, default=60)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of distillation per variant")
    parser.add_argument("--modes", nargs="+", default=["full", "cached", "hard"], choices=("full", "sampled", "cached", "hard"),
                        help="hard: no soft loss (alpha 0), the same initialisation from the teacher")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    for data in args.data:
        kg, teacher = teacher_for(data, 256, 1800.0 if data == "wordnet-rr" else 300.0)
        teacher_mrr = evaluate_link_prediction(model_scorer(teacher.model), kg, "test")["mrr"]
        for mode in args.modes:
            recipe = Recipe.from_dict({"name": f"distill-{mode}", "export_bits": 32, "steps": [
                {"kind": "distill", "dim": args.dim, "epochs": 1000, "candidates": "full" if mode == "hard" else mode,
                 "alpha": 0.0 if mode == "hard" else 1.0}]})
            started = time.perf_counter()
            result = run_recipe(teacher.model, kg, recipe, seed=0, max_time_s=args.budget)
            step = result.steps[-1]
            row = {"data": data, "candidates": mode, "student": f"complex-{args.dim}", "budget_s": args.budget,
                   "seconds": round(time.perf_counter() - started, 1), "mrr": step.mrr, "hits_at_10": step.hits_at_10,
                   "pct_teacher": 100 * step.mrr / teacher_mrr, "teacher_mrr": teacher_mrr}
            print(row, flush=True)
            rows.append(row)
    md = ("# Distillation: teacher in every step vs its answers cached once\n\n" + markdown_table(rows)
          + "\n\nSame student, initialisation, seed and training budget (`budget_s` of training steps); "
          "`seconds` is the whole step: training, the test evaluation and, for `cached`, building the cache "
          "before training (outside the budget).\n\nMachine: " + str(machine()))
    write_results("distill_cache_" + "_".join(args.data), {"machine": machine(), "args": vars(args), "rows": rows}, md)


if __name__ == "__main__":
    main()
