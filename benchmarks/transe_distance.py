"""TransE's distance, L1 (the default) against L2: accuracy with defaults, training cost, device latency.

    python benchmarks/transe_distance.py            # UMLS, Nations (and Kinships) seeds 0-2, demo seed 0; 3 sizes
    python benchmarks/transe_distance.py --quick    # seed 0, the two smaller sizes
    python benchmarks/transe_distance.py --only-wordnet   # wordnet-rr: L1 with nssa vs L2 with 1-N, 8 min each
    python benchmarks/transe_distance.py --only-latency   # the bundles' latency alone (~2 min)

Accuracy: `kgedge train --data D --model transe --dim 256` with `--option distance=l1` and `=l2`, every
other setting the default; filtered test MRR (both directions) per seed (the demo KG: seed 0 only, L1
takes about 10 minutes there). Kinships, a real KG outside ../shared, is read from the `pykeen` wheel
when the [bench] extra is installed.
Training cost: one 1-N step's all-entity scores, forward and backward, at 2k, 14,541 and 40,943
entities (the demo, FB15k-237's and wordnet-rr's sizes), width 256, batch 512.
Latency: random TransE tables (64 reals per row), one per distance with the same values, exported with the
`x86-avx2` profile; p50 / p95 of single top-10 queries through `EdgeModel` at 1 thread. The distances
alternate in rounds of 50 queries (5 untimed first), so that other jobs on the machine slow both alike
while neither evicts the other's table from the cache query by query.
Wordnet-rr (41k entities, past `L1_ONE_N_MAX_CELLS`): `kgedge train` picks nssa for L1 there, since a 1-N
L1 step takes over 10 s; both defaults (L1 + nssa, and L2 with `--option distance=l2`, 1-N) get the same
training budget. Writes benchmarks/results/transe_distance.{json,md} (`--only-wordnet`:
transe_distance_wordnet-rr.{json,md}; `--only-latency`: transe_distance_latency.{json,md}).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine, markdown_table, real_datasets, write_results
from latency_peers import random_checkpoint

from kgedge.data.sources import load_data
from kgedge.evaluate import evaluate_link_prediction
from kgedge.export import export_bundle, resolve_profile
from kgedge.models import ModelConfig, build
from kgedge.runtime import EdgeModel
from kgedge.train.checkpoint import Checkpoint
from kgedge.train.config import default_model_options, default_train_config, l1_loss_for_size
from kgedge.train.scorer import model_scorer
from kgedge.train.trainer import train_model

DISTANCES = ("l1", "l2")
ROUNDS, WARM_UP = 6, 5  # latency: rounds per distance, untimed queries at the start of each round


def accuracy_rows(datasets: list[str], seeds: list[int]) -> list[dict[str, object]]:
    rows = []
    for data in datasets:
        kg = load_data(data)
        for distance in DISTANCES:
            for seed in seeds:
                config = ModelConfig("transe", kg.num_entities, 2 * kg.num_relations, 256,
                                     **default_model_options("transe", {"distance": distance}))
                result = train_model(kg, config, default_train_config("transe", seed=seed))
                test = evaluate_link_prediction(model_scorer(result.model), kg, "test")
                row = {"data": data, "distance": distance, "seed": seed, "mrr": test["mrr"],
                       "hits_at_10": test["hits_at_10"], "train_s": round(result.train_seconds, 1),
                       "epochs": result.epochs_run}
                print(row, flush=True)
                rows.append(row)
    return rows


def training_cost_rows(sizes: list[int], batch: int = 512, width: int = 256,
                       repeats: int = 3) -> list[dict[str, object]]:
    """Seconds of one 1-N training step's scoring (forward and backward over every entity), per distance."""
    rows = []
    for n in sizes:
        seconds = {}
        for distance in DISTANCES:
            torch.manual_seed(0)
            model = build(ModelConfig("transe", n, 2, width, options={"distance": distance}))
            heads, relations = torch.randint(n, (batch,)), torch.randint(2, (batch,))
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.score_all_tails(heads, relations).logsumexp(1).sum().backward()
                times.append(time.perf_counter() - start)
            seconds[distance] = float(np.median(times))
        for distance in DISTANCES:
            rows.append({"entities": n, "width": width, "batch": batch, "distance": distance,
                         "step_s": round(seconds[distance], 3), "x_of_l2": round(seconds[distance] / seconds["l2"], 1)})
            print(rows[-1], flush=True)
    return rows


def latency_rows(sizes: list[int], queries: int, root: Path) -> list[dict[str, object]]:
    profile = resolve_profile("x86-avx2")
    # random tables: near-ties everywhere, so the export's accuracy gates measure nothing here
    profile = dataclasses.replace(profile, validation=dataclasses.replace(
        profile.validation, min_topk_overlap=0.0, max_mrr_drop=1.0))
    rows = []
    for n in sizes:
        base = random_checkpoint(n, 64)
        models = {}
        for distance in DISTANCES:
            model = build(ModelConfig("transe", n, base.model.config.num_relations, 64,
                                      options={"distance": distance})).eval()
            with torch.no_grad():
                model.entity.weight.copy_(base.model.entity.weight)
                model.relation.weight.copy_(base.model.relation.weight)
            path = root / f"transe-{distance}-{n}"
            export_bundle(Checkpoint(model, base.vocab, {"data": f"random-{n}"}), profile, path)
            models[distance] = EdgeModel.load(path, intra_op_threads=1)
        rng = np.random.default_rng(0)
        heads, relations = rng.integers(0, n, queries), rng.integers(0, base.model.config.num_relations, queries)
        times: dict[str, list[float]] = {d: [] for d in DISTANCES}
        per_round = queries // ROUNDS
        for r in range(ROUNDS):  # the distances alternate by rounds: each round warms its own table first
            for distance, model in models.items():
                for i in range(-WARM_UP, per_round):
                    j = (r * per_round + i) % queries
                    start = time.perf_counter()
                    model.topk(heads[j : j + 1], relations[j : j + 1], 10)
                    if i >= 0:
                        times[distance].append(time.perf_counter() - start)
        p50 = {d: float(np.median(t)) * 1e6 for d, t in times.items()}
        for distance in DISTANCES:
            rows.append({"entities": n, "width": 64, "distance": distance, "p50_us": round(p50[distance]),
                         "p95_us": round(float(np.percentile(times[distance], 95)) * 1e6),
                         "x_of_l2": round(p50[distance] / p50["l2"], 2),
                         "scored_bytes_per_query": models[distance].manifest["sizes"]["scored_bytes_per_query"]})
            print(rows[-1], flush=True)
    return rows


LATENCY_NOTE = ("The L1 distance is no matrix product. An int8 bundle's graph puts the table on one uint8 grid "
                "when the session loads and the query on it per run, and sums |a - b| = a + b - 2 min(a, b) in "
                "integers: one Min of bytes over N x W and one MatMulInteger of a row of ones with it (a float "
                "bundle computes every |q - t| in float and sums them by a product with a row of ones). "
                "`scored_bytes_per_query` is the table one query reads.")


def wordnet_rows(budget: float) -> list[dict[str, object]]:
    kg = load_data("wordnet-rr")
    rows = []
    for distance in DISTANCES:
        options = {"distance": distance}
        config = default_train_config("transe", max_time_s=budget)
        config = l1_loss_for_size(config, "transe", options, kg.num_entities, 256, loss_chosen=False)
        model_config = ModelConfig("transe", kg.num_entities, 2 * kg.num_relations, 256,
                                   **default_model_options("transe", options))
        result = train_model(kg, model_config, config)
        test = evaluate_link_prediction(model_scorer(result.model), kg, "test")
        rows.append({"data": "wordnet-rr", "distance": distance, "loss": config.loss, "budget_s": budget,
                     "mrr": test["mrr"], "hits_at_10": test["hits_at_10"], "train_s": round(result.train_seconds, 1),
                     "epochs": result.epochs_run, "stop": result.stop_reason})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0 only, and only the smaller sizes")
    parser.add_argument("--only-wordnet", action="store_true", help="only wordnet-rr, both distances by their defaults")
    parser.add_argument("--wordnet-budget", type=float, default=480.0, help="training seconds per distance")
    parser.add_argument("--only-latency", action="store_true", help="only the exported bundles' single-query latency")
    args = parser.parse_args()
    if args.only_latency:
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="kgedge-transe-distance-") as tmp:
            latency = latency_rows([14_541, 100_000], 300, Path(tmp))
        markdown = "\n\n".join([
            "# TransE bundles, L1 against L2: single-query latency (x86-avx2, 1 thread, top-10, random tables)",
            f"Run by `benchmarks/transe_distance.py --only-latency` in {time.time() - started:.0f} s. "
            + LATENCY_NOTE, markdown_table(latency), f"Machine: {machine()}"])
        write_results("transe_distance_latency", {"machine": machine(), "latency": latency}, markdown)
        return
    if args.only_wordnet:
        started = time.time()
        rows = wordnet_rows(args.wordnet_budget)
        markdown = "\n\n".join([
            "# TransE on wordnet-rr: L1 (default; nssa at this size) against L2 (1-N)",
            f"Run by `benchmarks/transe_distance.py --only-wordnet` in {time.time() - started:.0f} s; the same "
            f"training budget ({args.wordnet_budget:.0f} s) for both, {torch.get_num_threads()} torch thread(s) "
            "(the latency harness this script imports pins one); filtered test MRR, both directions.",
            markdown_table(rows), f"Machine: {machine()}"])
        write_results("transe_distance_wordnet-rr", {"machine": machine(), "rows": rows}, markdown)
        return
    seeds = [0] if args.quick else [0, 1, 2]
    sizes = [14_541] if args.quick else [14_541, 100_000]
    started = time.time()
    real = real_datasets()
    accuracy = accuracy_rows(real, seeds) + accuracy_rows(["demo"], [0])
    training = training_cost_rows([2_000, 14_541] if args.quick else [2_000, 14_541, 40_943])
    with tempfile.TemporaryDirectory(prefix="kgedge-transe-distance-") as tmp:
        latency = latency_rows(sizes, 300, Path(tmp))
    summary = []
    for data in (*real, "demo"):
        for distance in DISTANCES:
            mrrs = [r["mrr"] for r in accuracy if r["data"] == data and r["distance"] == distance]
            summary.append({"data": data, "distance": distance, "seeds": len(mrrs), "mrr_min": min(mrrs),
                            "mrr_mean": float(np.mean(mrrs)), "mrr_max": max(mrrs)})
    info = machine()
    markdown = "\n\n".join([
        "# TransE: the L1 distance (default) against L2",
        f"Run by `benchmarks/transe_distance.py` in {time.time() - started:.0f} s.",
        "## Accuracy with defaults (dim 256, filtered test MRR, both directions)",
        markdown_table(summary), markdown_table(accuracy),
        f"## Training cost: one 1-N step's scores, forward and backward ({torch.get_num_threads()} torch "
        "thread(s), as for the accuracy runs; random tables)",
        "L2 scores are one matrix product; L1 has no such form (torch.cdist with p=1).",
        markdown_table(training),
        "## Single-query latency of the exported bundle (x86-avx2, 1 thread, top-10, random tables)",
        LATENCY_NOTE,
        markdown_table(latency),
        f"Machine: {info}",
    ])
    write_results("transe_distance", {"machine": info, "summary": summary, "accuracy": accuracy,
                                      "training": training, "latency": latency}, markdown)


if __name__ == "__main__":
    main()
