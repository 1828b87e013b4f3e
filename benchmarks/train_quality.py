"""Teacher quality with defaults only (issue: foundation): filtered test MRR and training time.

    python benchmarks/train_quality.py                 # UMLS, Nations (and Kinships) x 4 models, dim 256; demo
    python benchmarks/train_quality.py --wordnet       # + ComplEx-256 on wordnet-rr (30 min budget)
    python benchmarks/train_quality.py --only-wordnet  # just that (results/train_quality_wordnet-rr.md)
    python benchmarks/train_quality.py --pykeen        # + PyKEEN rows when `pykeen` is installed

Kinships, a real KG outside ../shared, comes from the `pykeen` wheel when the [bench] extra is installed.
Each model is trained exactly as `kgedge train --data D --model M --dim 256` would (per-model
defaults, early stopping on validation MRR); its test metrics are the filtered, both-direction ones of
`kgedge evaluate`. Writes benchmarks/results/train_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from common import RESULTS, machine, markdown_table, real_datasets, write_results

from kgedge.data.sources import load_data
from kgedge.evaluate import evaluate_link_prediction, popularity_scorer, recommendation_metrics
from kgedge.models import ModelConfig
from kgedge.train.config import default_model_options, default_train_config
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model

KGE = ("complex", "rotate", "distmult", "transe")
# the wordnet-rr teacher is kept where benchmarks/compression.py and export_quality.py look for it
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"


def run(data: str, model: str, dim: int, max_time: float = 0.0) -> dict[str, object]:
    kg = load_data(data)
    load_at_start = round(os.getloadavg()[0], 1)
    config = ModelConfig(model=model, num_entities=kg.num_entities, num_relations=2 * kg.num_relations, dim=dim,
                         **default_model_options(model))
    overrides = {"max_time_s": max_time} if max_time else {}
    if data == "wordnet-rr":  # 1-N over 41k entities: larger batches keep the 2 cores busy
        overrides["batch_size"] = 1000
    out = CACHE / f"teacher-{data}-{model}{dim}.ckpt" if data == "wordnet-rr" else None
    result = train_model(kg, config, default_train_config(model, **overrides), out=out)
    test = evaluate_link_prediction(model_scorer(result.model), kg, "test")
    row: dict[str, object] = {"data": data, "model": model, "dim": dim, "mrr": test["mrr"],
                              "hits_at_1": test["hits_at_1"], "hits_at_10": test["hits_at_10"],
                              "train_s": round(result.train_seconds, 1), "epochs": result.epochs_run,
                              "stop": result.stop_reason, "load_at_start": load_at_start}
    if "bought" in kg.relation_ids:
        ours = recommendation_metrics(model_scorer(result.model), kg, "bought")
        base = recommendation_metrics(popularity_scorer(kg, kg.relation_ids["bought"]), kg, "bought")
        row["recall10_bought"] = ours["recall_at_10"]
        row["recall10_popularity"] = base["recall_at_10"]
    print(row, flush=True)
    return row


def pykeen_row(data: str, model: str, dim: int, epochs: int) -> dict[str, object] | None:
    try:
        from pykeen.pipeline import pipeline
        from pykeen.triples import TriplesFactory
    except ImportError:
        return None
    from kgedge.data.sources import resolve_data

    root = resolve_data(data)
    train = TriplesFactory.from_path(root / "train.txt", create_inverse_triples=False)
    valid = TriplesFactory.from_path(root / "valid.txt", entity_to_id=train.entity_to_id, relation_to_id=train.relation_to_id)
    test = TriplesFactory.from_path(root / "test.txt", entity_to_id=train.entity_to_id, relation_to_id=train.relation_to_id)
    started = time.perf_counter()
    result = pipeline(training=train, validation=valid, testing=test, model=model, model_kwargs={"embedding_dim": dim},
                      training_kwargs={"num_epochs": epochs}, random_seed=0, device="cpu",
                      # filtered ranks as ours: every known train/valid/test triple filtered out
                      evaluation_kwargs={"additional_filter_triples": [train.mapped_triples, valid.mapped_triples]})
    return {"data": data, "model": f"pykeen-{model}", "dim": dim,
            "mrr": float(result.metric_results.get_metric("both.realistic.inverse_harmonic_mean_rank")),
            "hits_at_10": float(result.metric_results.get_metric("both.realistic.hits_at_10")),
            "train_s": round(time.perf_counter() - started, 1), "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--wordnet", action="store_true", help="also ComplEx on wordnet-rr (30 min budget)")
    parser.add_argument("--only-wordnet", action="store_true", help="only ComplEx on wordnet-rr")
    parser.add_argument("--skip-demo", action="store_true", help="leave out the demo KG row (the slowest)")
    parser.add_argument("--pykeen", action="store_true", help="also PyKEEN with the same model, dim and epochs")
    args = parser.parse_args()
    rows = []
    if not args.only_wordnet:
        rows += [run(data, model, args.dim) for data in real_datasets() for model in KGE]
        if not args.skip_demo:
            rows.append(run("demo", "complex", args.dim))
        else:  # keep the last measured demo row
            previous = RESULTS / "train_quality.json"
            if previous.is_file():
                rows += [r for r in json.loads(previous.read_text())["rows"] if r["data"] == "demo"]
    if args.wordnet or args.only_wordnet:
        rows.append(run("wordnet-rr", "complex", args.dim, max_time=1800.0))
    if args.pykeen:
        for row in [r for r in rows if r["data"] in real_datasets()]:
            peer = pykeen_row(str(row["data"]), str(row["model"]), args.dim, int(row["epochs"]))
            if peer is not None:
                rows.append(peer)
    md = "# Teacher quality with defaults\n\n" + markdown_table(rows) + "\n\nMachine: " + str(machine())
    write_results("train_quality_wordnet-rr" if args.only_wordnet else "train_quality", {"machine": machine(), "rows": rows}, md)


if __name__ == "__main__":
    main()
