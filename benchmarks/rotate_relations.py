"""RotatE's relation parameters: rows normalised to modulus 1 (shipped) against phases trained directly.

    python benchmarks/rotate_relations.py                   # UMLS, Nations (and Kinships), seeds 0-4
    python benchmarks/rotate_relations.py --seeds 2 --data nations

Both variants score ``-||h ∘ r - t||₂`` with ``|r_i| = 1`` and train with RotatE's defaults (``kgedge train
--model rotate --dim 256``); only the relation parameters differ. ``phases``: one angle per complex dimension,
uniform on the circle at the start (kgedge up to this change). ``rows``: ``[real | imaginary]`` rows
normalised in the query, starting tiny (``kgedge.models.rotate``). Each seed trains both from the same
entity table. Writes benchmarks/results/rotate_relations.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import machine, markdown_table, real_datasets, write_results
from torch import Tensor

from kgedge.data.sources import load_data
from kgedge.evaluate import evaluate_link_prediction
from kgedge.models import ModelConfig
from kgedge.models.base import KGModel
from kgedge.models.rotate import RotatE, rotate_by
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model


class PhaseRotatE(KGModel):
    """RotatE with one trained phase per complex dimension (the earlier parameterisation)."""

    interaction = "l2"
    complex_valued = True

    @property
    def relation_width(self) -> int:
        return self.config.dim

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        torch.nn.init.uniform_(self.relation.weight, -torch.pi, torch.pi)

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        phase = self.relation(relations)
        return rotate_by(self.entity(heads), torch.cos(phase), torch.sin(phase))

    def factors(self, heads: Tensor, relations: Tensor, tails: Tensor) -> list[Tensor]:
        return [self.entity(heads), self.entity(tails)]


def run(data: str, variant: str, seed: int, dim: int) -> dict[str, object]:
    kg = load_data(data)
    config = ModelConfig(model="rotate", num_entities=kg.num_entities, num_relations=2 * kg.num_relations, dim=dim,
                         **default_model_options("rotate"))
    torch.manual_seed(seed)
    entity = RotatE(config).entity.weight.detach().clone()
    model = PhaseRotatE(config) if variant == "phases" else RotatE(config)
    with torch.no_grad():
        model.entity.weight.copy_(entity)
    result = train_model(kg, config, default_train_config("rotate", seed=seed), model=model)
    test = evaluate_link_prediction(model_scorer(result.model), kg, "test")
    row = {"data": data, "variant": variant, "seed": seed, "mrr": round(test["mrr"], 4),
           "hits_at_10": round(test["hits_at_10"], 4), "train_s": round(result.train_seconds, 1),
           "epochs": result.epochs_run}
    print(row, flush=True)
    return row


def summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        by = {v: [r for r in rows if r["data"] == data and r["variant"] == v] for v in ("phases", "rows")}
        gains = [b["mrr"] - a["mrr"] for a, b in zip(by["phases"], by["rows"])]
        out.append({"data": data, "seeds": len(gains),
                    "phases_mean_mrr": round(statistics.mean(r["mrr"] for r in by["phases"]), 4),
                    "rows_mean_mrr": round(statistics.mean(r["mrr"] for r in by["rows"]), 4),
                    "seeds_gained": sum(g > 0 for g in gains),
                    "phases_mean_train_s": round(statistics.mean(r["train_s"] for r in by["phases"]), 1),
                    "rows_mean_train_s": round(statistics.mean(r["train_s"] for r in by["rows"]), 1)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="*", default=None, help="datasets (default: the real KGs found)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    rows = [run(data, variant, seed, args.dim) for data in (args.data or real_datasets())
            for seed in range(args.seeds) for variant in ("phases", "rows")]
    table = summary(rows)
    md = ("# RotatE: relation rows normalised to modulus 1 vs phases\n\n" + markdown_table(table)
          + "\n\n## Every run\n\n" + markdown_table(rows) + "\n\nMachine: " + str(machine()))
    write_results("rotate_relations", {"machine": machine(), "summary": table, "rows": rows}, md)


if __name__ == "__main__":
    main()
