"""Training throughput of one process against two data-parallel processes (torchrun, gloo, CPU).

Each scenario trains the same teacher for a fixed wall-clock budget in three set-ups: one process
with one thread (the baseline), one process with two threads, and two processes of one thread each
(``torchrun --nproc_per_node=2``, global batch unchanged). Throughput is reciprocal-augmented training
queries per second over the steps after a warm-up; scaling efficiency is the 2-process throughput
over twice the 1-process, 1-thread one. Scenarios:

* ``1n_ce``: ComplEx dim 64, 1-N cross entropy, batch 512 on a 20k-entity shop KG: compute-bound
  (``batch x N x W`` products), the all-reduce is 20k x 128 floats per step;
* ``nssa``: the same model with negative sampling, batch 2048, on a 200k-entity KG: little compute
  per step, but the gradient and Adagrad update are dense over the whole table and the all-reduce
  moves 200k x 128 floats per step: the communication-bound case.

Usage::

    python benchmarks/distributed_throughput.py            # ~6 min on 2 cores
    python benchmarks/distributed_throughput.py --seconds 15 --scenarios 1n_ce   # smoke run

Writes ``benchmarks/results/distributed_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, markdown_table, write_results  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "distributed_throughput"
SCENARIOS: dict[str, dict[str, object]] = {
    "1n_ce": {"entities": 20_000, "loss": "1n_ce", "batch_size": 512},
    "nssa": {"entities": 200_000, "loss": "nssa", "batch_size": 2048},
}
SETUPS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1))
WARMUP_STEPS = 3


def data_dir(entities: int) -> Path:
    from kgedge.data.generate import ShopConfig, generate_shop_kg, write_shop_kg

    directory = CACHE / f"shop-{entities}"
    if not (directory / "train.txt").is_file():
        write_shop_kg(generate_shop_kg(ShopConfig(num_entities=entities)), directory, overwrite=True)
    return directory


def worker(args: argparse.Namespace) -> None:
    """One training run (a torchrun worker when RANK is set); rank 0 writes the figures."""
    import torch

    from kgedge.data.kg import load_kg
    from kgedge.models import ModelConfig
    from kgedge.train.config import default_train_config
    from kgedge.train.distributed import launched_by_torchrun, process_group, train_distributed
    from kgedge.train.trainer import train_model

    torch.set_num_threads(args.threads)
    kg = load_kg(data_dir(args.entities))
    model_config = ModelConfig("complex", kg.num_entities, 2 * kg.num_relations, args.dim)
    config = default_train_config("complex", loss=args.loss, batch_size=args.batch_size, epochs=1000,
                                  max_time_s=args.seconds, max_valid_triples=50)
    stamps: list[float] = []

    def on_step(epoch: int, step: int, steps: int, loss: float, rate: float) -> None:
        stamps.append(time.perf_counter())

    if launched_by_torchrun():
        with process_group("cpu") as context:
            train_distributed(kg, model_config, config, context, on_step=on_step)
            rank, world = context.rank, context.world_size
    else:
        train_model(kg, model_config, config, on_step=on_step)
        rank, world = 0, 1
    timed = stamps[WARMUP_STEPS:]
    steps = len(timed) - 1
    result = {
        "processes": world, "threads": args.threads, "steps": len(stamps),
        "queries_per_s": steps * args.batch_size / (timed[-1] - timed[0]) if steps > 0 else 0.0,
        "seconds_per_step": (timed[-1] - timed[0]) / steps if steps > 0 else 0.0,
        "peak_rss_mib_rank": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "train_triples": len(kg.train), "entities": kg.num_entities,
    }
    if rank == 0:
        Path(args.json).write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_setup(
    name: str, scenario: dict[str, object], processes: int, threads: int, seconds: float
) -> dict[str, object]:
    out = CACHE / f"result-{processes}x{threads}.json"
    out.unlink(missing_ok=True)
    worker_args = ["--worker", "--json", str(out), "--threads", str(threads), "--seconds", str(seconds),
                   "--entities", str(scenario["entities"]), "--loss", str(scenario["loss"]),
                   "--batch-size", str(scenario["batch_size"])]
    script = str(Path(__file__).resolve())
    if processes == 1:
        command = [sys.executable, script, *worker_args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   "--master_addr=127.0.0.1", f"--master_port={_free_port()}", script, *worker_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    result = json.loads(out.read_text())
    load = os.getloadavg()[0]
    return {"setup": name, **result, "wall_s": round(time.perf_counter() - started, 1), "load_avg_1min": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default="", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--entities", type=int, default=20_000, help=argparse.SUPPRESS)
    parser.add_argument("--loss", default="1n_ce", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=64, help="ComplEx dimension (complex numbers per row)")
    parser.add_argument("--seconds", type=float, default=40.0, help="training budget of each run")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for scenario_name in args.scenarios:
        scenario = SCENARIOS[scenario_name]
        data_dir(int(scenario["entities"]))  # generate once, outside the timed runs
        base = None
        for name, processes, threads in SETUPS:
            row = {"scenario": scenario_name, **run_setup(name, scenario, processes, threads, args.seconds)}
            base = base or row["queries_per_s"]
            row["speed_up"] = row["queries_per_s"] / base
            row["efficiency"] = row["speed_up"] / (processes * threads)
            rows.append(row)
            print(json.dumps(row), flush=True)
    columns = ("scenario", "setup", "entities", "queries_per_s", "seconds_per_step", "speed_up", "efficiency",
               "steps", "peak_rss_mib_rank", "load_avg_1min")
    table = [{c: r[c] for c in columns} for r in rows]
    markdown = "\n".join([
        "# Data-parallel training throughput (1 vs 2 processes)", "",
        f"ComplEx dim {args.dim}, {args.seconds:.0f} s budget per run, first {WARMUP_STEPS} steps not timed; "
        "queries are reciprocal-augmented training triples; the global batch is the same in every set-up. "
        "Efficiency = speed-up / (processes x threads). Shared 2-core machine: the load average column shows "
        "what else ran.", "",
        markdown_table(table), "",
        "Produced by `python benchmarks/distributed_throughput.py`.",
    ])
    write_results("distributed_throughput", {"machine": machine(), "seconds": args.seconds, "dim": args.dim,
                                             "scenarios": SCENARIOS, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
