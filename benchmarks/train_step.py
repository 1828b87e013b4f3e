"""Seconds per training step on a mid-size KG: plain 1-N and distillation, with and without the two
speed-ups of the training loop (freed memory kept by glibc, the hard loss's scores shared with the
distillation hook).

    python benchmarks/train_step.py                       # wordnet-rr, batch 512, ComplEx-24 student
    python benchmarks/train_step.py --data umls --steps 20

Each setting runs in its own process (keeping freed memory is a per-process switch that cannot be
undone), on the same random batches; the settings take turns for ``--rounds`` rounds, and the figure
is the median over rounds of each process's median step (the range of those medians beside it). The distillation teacher is
the cached ComplEx-256 of compression.py (trained on first use). Writes
benchmarks/results/train_step_<data>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import machine, markdown_table, write_results

SETTINGS = {  # name -> (keep freed memory, share scores with the hook)
    "as before (glibc unmaps, hook scores again)": (False, False),
    "hook reuses the hard loss's scores": (False, True),
    "+ freed memory kept (shipped)": (True, True),
}


def _measure(data: str, steps: int, batch: int, retain: bool, share: bool) -> dict[str, float]:
    import torch

    from compression import teacher_for
    from kgedge.compress.distill import DistillationLoss, DistillConfig
    from kgedge.compress.init import init_student_from_teacher
    from kgedge.models import ModelConfig, build
    from kgedge.train.config import default_train_config
    from kgedge.train.memory import retain_freed_memory
    from kgedge.train.trainer import batch_loss

    if retain:
        retain_freed_memory()
    kg, checkpoint = teacher_for(data, 256, 1800.0)
    teacher = checkpoint.model
    torch.manual_seed(0)
    student = build(ModelConfig(model="complex", num_entities=kg.num_entities,
                                num_relations=teacher.config.num_relations, dim=24))
    init_student_from_teacher(student, teacher)
    config = default_train_config("complex")
    hook = DistillationLoss(teacher, DistillConfig(), kg.num_entities, torch.Generator().manual_seed(0))
    queries = torch.as_tensor(kg.with_reciprocals(kg.train))
    optimizer = torch.optim.Adagrad(student.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    out: dict[str, float] = {}
    for name, distil in (("plain_1n_s", False), ("distill_s", True)):
        times = []
        for _ in range(steps + 2):  # the first two warm up
            rows = queries[torch.randint(len(queries), (batch,), generator=generator)]
            started = time.perf_counter()
            if not distil:
                loss = batch_loss(student, rows, config, None)
            elif share:
                loss = batch_loss(student, rows, config, None, hook)
            else:
                loss = batch_loss(student, rows, config, None) + hook(student, rows)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - started)
        out[name] = statistics.median(times[2:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="wordnet-rr")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # retain share: one measurement
    args = parser.parse_args()
    if args.child:
        retain, share = (flag == "1" for flag in args.child)
        print(json.dumps(_measure(args.data, args.steps, args.batch, retain, share)))
        return
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for round_ in range(args.rounds):
        for name, (retain, share) in SETTINGS.items():
            child = subprocess.run([sys.executable, __file__, "--data", args.data, "--steps", str(args.steps),
                                    "--batch", str(args.batch), "--child", str(int(retain)), str(int(share))],
                                   capture_output=True, text=True, check=True)
            runs[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(round_, name, runs[name][-1], flush=True)
    rows = []
    for name, figures in runs.items():
        row: dict[str, object] = {"setting": name}
        for key in ("plain_1n_s", "distill_s"):
            values = [f[key] for f in figures]
            row[key] = round(statistics.median(values), 4)
            row[key.replace("_s", "_range")] = f"{min(values):.3f}-{max(values):.3f}"
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["plain_speedup"] = round(base["plain_1n_s"] / row["plain_1n_s"], 2)
        row["distill_speedup"] = round(base["distill_s"] / row["distill_s"], 2)
    md = (f"# Training step time on {args.data}\n\nBatch {args.batch}; each step is forward + backward + Adagrad "
          "step; student ComplEx-24 initialised from the ComplEx-256 teacher; distillation is the default "
          "`L_hard + 1.0 * L_soft` at T = 4 over every entity. Per process the median of "
          f"{args.steps} steps (after 2 warm-up steps); the settings take turns for {args.rounds} rounds, and the "
          "table gives the median over rounds (the range of the rounds beside it).\n\n"
          + markdown_table(rows) + "\n\nMachine: " + str(machine()))
    write_results(f"train_step_{args.data}", {"machine": machine(), "args": vars(args), "rows": rows}, md)


if __name__ == "__main__":
    main()
