"""``kgedge distill`` and ``kgedge compress``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from kgedge.cli.common import (
    print_json,
    print_table,
    progress_bar,
    require_torch,
    training_progress,
    user_errors,
)
from kgedge.cli.model_cmds import DATA_HELP

# listed from the files: importing kgedge.compress would import torch, and --help must work without it
SHIPPED_RECIPES = sorted(p.stem for p in (Path(__file__).parents[1] / "compress" / "recipes").glob("*.toml"))


def _run(teacher: Path, data: str, recipe, out: Path, seed: int, max_time: float, json_out: bool) -> None:  # noqa: ANN001
    from kgedge.compress.pipeline import run_recipe
    from kgedge.data.sources import load_data
    from kgedge.train.checkpoint import Vocabulary, load_checkpoint, save_checkpoint

    loaded = load_checkpoint(teacher)
    kg = load_data(data)
    if loaded.vocab.entities != kg.entities or loaded.vocab.relations != kg.relations:
        raise ValueError(f"{teacher} was trained on other data than --data {data}")

    with progress_bar() as bar:  # on stderr, so --json's stdout stays one JSON object
        task = bar.add_task(f"compress ({recipe.name})", total=None, info="")

        def show(report) -> None:  # noqa: ANN001
            within = f"{report.recipe} " if recipe.choose_from else ""
            bar.console.print(f"{within}{report.step}: {report.model}-{report.dim} {report.bytes:,} bytes "
                              f"({report.compression:.1f}x smaller), MRR {report.mrr:.4f} "
                              f"({100 * report.teacher_share:.1f}% of teacher), Hits@10 {report.hits_at_10:.4f}, "
                              f"{report.seconds:.1f} s" + (f" [{report.note}]" if report.note else ""))

        result = run_recipe(loaded.model, kg, recipe, seed=seed, max_time_s=max_time, on_step=show,
                            on_train_step=training_progress(bar, task))
    candidates = [asdict(c) for c in result.candidates]
    metadata = {"data": kg.name, "teacher": str(teacher), "recipe": result.recipe, "requested_recipe": recipe.name,
                "qat_bits": result.bits, "export_bits": result.export_bits, "teacher_test": result.teacher,
                "steps": [asdict(s) for s in result.steps], "candidates": candidates}
    save_checkpoint(out, result.model, Vocabulary(**asdict(loaded.vocab)), metadata)
    rows = [{k: v for k, v in asdict(s).items() if k not in ("note", "recipe")} for s in result.steps]
    # "recipe": the recipe whose steps made the student (the chosen candidate of a choice such as auto)
    summary = {"checkpoint": str(out), "recipe": result.recipe, "requested_recipe": recipe.name,
               "teacher_mrr": result.teacher["mrr"], "qat_bits": result.bits, "export_bits": result.export_bits,
               "steps": rows, "candidates": candidates}
    if json_out:
        print_json(summary)
        return
    if candidates:
        print_table(candidates, title=f"{recipe.name}: candidates, the best by validation MRR kept")
    print_table(rows, title=f"{result.recipe}: teacher MRR {result.teacher['mrr']:.4f}")
    if result.export_bits == 4:
        typer.echo(f"a 4-bit student: `kgedge export {out}` uses the int4 profile", err=True)


def compress(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher checkpoint."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    out: Path = typer.Option(..., "--out", help="Student checkpoint to write."),
    recipe: str = typer.Option("auto", "--recipe", help=f"Shipped recipe name ({', '.join(SHIPPED_RECIPES)}) "
                               "or a .toml file. auto runs default (int8), wide-int4 (4-bit) and wide-int4-hard (4-bit, hard "
                               "labels only) and keeps the student with the best validation MRR."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    max_time: float = typer.Option(0.0, "--max-time", help="Training budget per step in seconds (0 = early stopping only)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object with every step's figures."),
) -> None:
    """Compress a teacher by a recipe (distil, prune, low-rank, QAT), printing bytes, MRR and % of the teacher after each step."""
    require_torch("compress")
    from kgedge.compress.recipe import load_recipe

    with user_errors():
        _run(teacher, data, load_recipe(recipe), out, seed, max_time, json_out)


def distill(
    teacher: Path = typer.Option(..., "--teacher", help="Teacher checkpoint (any model, graph encoders included)."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    student: str = typer.Option("auto", "--student", help="Student model (transe, distmult, complex, rotate); auto = complex, which matched or beat the teacher's own family at the same reals per row (benchmarks/student_family.py)."),
    dim: int = typer.Option(24, "--dim", help="Student dimension (8-64 typical)."),
    out: Path = typer.Option(..., "--out", help="Student checkpoint to write."),
    alpha: float = typer.Option(1.0, "--alpha", help="Weight of the soft (KL) loss."),
    temperature: float = typer.Option(4.0, "--temperature", help="Softmax temperature T."),
    epochs: int = typer.Option(200, "--epochs", help="Most epochs (early stopping on validation MRR)."),
    init: str = typer.Option("teacher", "--init", help="teacher (SVD projection of its entity table), random, or a lightweight embedding of the entity graph: mf, deepwalk, node2vec."),
    adaptive: bool = typer.Option(False, "--adaptive", help="DualDE-style per-query soft/hard weighting."),
    hint_weight: float = typer.Option(0.0, "--hint-weight", help="Weight of the score-level hint loss."),
    candidates: str = typer.Option("auto", "--candidates", help="full (1-N), sampled (teacher top-k + random), cached "
                                   "(the teacher's top-k and the rest, computed once before training) or auto (full up to 10,000 entities, "
                                   "cached up to 100,000, sampled beyond)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    max_time: float = typer.Option(0.0, "--max-time", help="Training budget in seconds."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Distil a teacher into a small student: L = L_hard + alpha * T^2 * KL(teacher || student)."""
    require_torch("distill")
    from kgedge.compress.recipe import Recipe

    with user_errors():
        recipe = Recipe.from_dict({"name": "distill", "export_bits": 32, "steps": [{
            "kind": "distill", "student": student, "dim": dim, "epochs": epochs, "alpha": alpha,
            "temperature": temperature, "init": init, "adaptive": adaptive, "hint_weight": hint_weight,
            "candidates": candidates}]}, source="kgedge distill")
        _run(teacher, data, recipe, out, seed, max_time, json_out)


def register(app: typer.Typer) -> None:
    app.command()(distill)
    app.command()(compress)
