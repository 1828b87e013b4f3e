"""A learned softmax temperature per relation (kgedge.train.temperature) for RotatE, and TransE as a control.

    python benchmarks/relation_temperature.py               # UMLS, Nations (and Kinships), ~10 min at 1 thread
    python benchmarks/relation_temperature.py --data nations --seeds 4

Variants of ``kgedge train --model rotate --dim 256`` (defaults otherwise; ``--seeds`` per KG, Nations
``--nations-seeds`` as its seed spread is largest):
``before``: label smoothing 0.2, no temperature (the defaults up to this change); ``temperature``: the same
label smoothing with the learned temperature; ``now``: the temperature with label smoothing 0.05 (the
defaults now). TransE (L1, its defaults) with and without the temperature: ``transe``, ``transe+temperature``
(seeds 0-2). Test MRR, filtered. Writes benchmarks/results/relation_temperature.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import machine, markdown_table, real_datasets, write_results

from kgedge.data.sources import load_data
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import ModelConfig
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model

VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "before": ("rotate", {"label_smoothing": 0.2, "relation_temperature": False}),
    "temperature": ("rotate", {"label_smoothing": 0.2, "relation_temperature": True}),
    "now": ("rotate", {}),
    "transe": ("transe", {"relation_temperature": False}),
    "transe+temperature": ("transe", {"relation_temperature": True}),
}
TRANSE_SEEDS = 3


def run(data: str, variant: str, seed: int, dim: int) -> dict[str, object]:
    kg = load_data(data)
    model, changes = VARIANTS[variant]
    config = ModelConfig(model=model, num_entities=kg.num_entities, num_relations=2 * kg.num_relations, dim=dim,
                         **default_model_options(model))
    train = default_train_config(model, seed=seed, **changes)
    result = train_model(kg, config, train)
    test = evaluate_link_prediction(model_scorer(result.model), kg, "test")
    row = {"data": data, "variant": variant, "seed": seed, "label_smoothing": train.label_smoothing,
           "mrr": round(test["mrr"], 4), "hits_at_10": round(test["hits_at_10"], 4),
           "train_s": round(result.train_seconds, 1), "epochs": result.epochs_run}
    print(row, flush=True)
    return row


def summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        for variant in VARIANTS:
            runs = [r for r in rows if r["data"] == data and r["variant"] == variant]
            if runs:
                mrr = [float(r["mrr"]) for r in runs]  # type: ignore[arg-type]
                out.append({"data": data, "variant": variant, "seeds": len(runs),
                            "mean_mrr": round(statistics.mean(mrr), 4), "min_mrr": min(mrr), "max_mrr": max(mrr),
                            "seed_0_mrr": mrr[0], "mean_train_s": round(statistics.mean(
                                float(r["train_s"]) for r in runs), 1)})  # type: ignore[arg-type]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="*", default=None, help="datasets (default: the real KGs found)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--nations-seeds", type=int, default=16)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for data in args.data or real_datasets():
        for variant, (model, _) in VARIANTS.items():
            seeds = args.nations_seeds if data == "nations" else args.seeds
            rows += [run(data, variant, seed, args.dim) for seed in range(TRANSE_SEEDS if model == "transe" else seeds)]
    table = summary(rows)
    md = ("# A learned softmax temperature per relation (RotatE; TransE as a control)\n\n"
          f"dim {args.dim}, {args.threads} thread(s), filtered test MRR.\n\n" + markdown_table(table)
          + "\n\n## Every run\n\n" + markdown_table(rows) + "\n\nMachine: " + str(machine()))
    write_results("relation_temperature", {"machine": machine(), "threads": args.threads, "summary": table,
                                           "rows": rows}, md)


if __name__ == "__main__":
    main()
