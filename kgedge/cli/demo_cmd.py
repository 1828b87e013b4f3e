"""``kgedge demo``: the whole product on the demo shop KG, end to end, in one command.

generate -> train a teacher -> compress (the auto recipe: an int8 and a 4-bit student, the better one
kept) -> export a bundle at the student's bits -> query it through the torch-free runtime -> benchmark
it. Every stage is the same library call the individual commands make.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import typer

from kgedge.cli.common import print_table, require_torch, user_errors


def _best_profile() -> str:
    from kgedge.export.profile import available_profiles, cpu_supports, load_profile

    profiles = available_profiles()
    for name in ("x86-avx512-vnni", "arm64", "x86-avx2"):
        if name in profiles and cpu_supports(load_profile(profiles[name])):
            return name
    return "portable"


def _stage(title: str) -> None:
    typer.secho(f"\n== {title}", bold=True, err=True)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the checkpoints, bundle and report go."),
    data: str = typer.Option("demo", "--data", help="Data set (default: the demo shop KG, generated on first use)."),
    dim: int = typer.Option(128, "--dim", help="Teacher dimension."),
    budget: float = typer.Option(120.0, "--budget", help="Seconds of training per stage at most."),
    profile: str | None = typer.Option(None, "--profile", help="Export profile (default: int4 for a 4-bit student, "
                                       "else the best int8 profile this CPU runs)."),
    recipe: str = typer.Option("auto", "--recipe", help="Compression recipe (kgedge compress --help lists them)."),
) -> None:
    """Run train -> compress -> export -> query -> bench on the demo KG and write OUT/report.json."""
    require_torch("demo")
    from kgedge.compress.pipeline import run_recipe
    from kgedge.compress.recipe import load_recipe
    from kgedge.data.sources import load_data
    from kgedge.evaluate import popularity_scorer, recommendation_metrics
    from kgedge.export import export_bundle
    from kgedge.export.profile import profile_for_checkpoint
    from kgedge.models import ModelConfig
    from kgedge.runtime import EdgeModel
    from kgedge.train.checkpoint import Vocabulary, load_checkpoint, save_checkpoint
    from kgedge.train.config import default_train_config
    from kgedge.train.scorer import model_scorer
    from kgedge.train.trainer import train_model

    report: dict[str, object] = {}
    with user_errors():
        started = time.perf_counter()
        _stage(f"data: {data}")
        kg = load_data(data)
        report["data"] = kg.stats()
        print_table([{k: report["data"][k] for k in ("name", "entities", "relations", "train", "valid", "test")}])  # type: ignore[index]

        _stage(f"train: ComplEx teacher, dim {dim}")
        out.mkdir(parents=True, exist_ok=True)
        config = ModelConfig(model="complex", num_entities=kg.num_entities, num_relations=2 * kg.num_relations, dim=dim)
        trained = train_model(kg, config, default_train_config("complex", max_time_s=budget), out=out / "teacher.ckpt")
        teacher = trained.model
        teacher_rec = recommendation_metrics(model_scorer(teacher), kg, "bought") if "bought" in kg.relation_ids else {}
        popularity = (recommendation_metrics(popularity_scorer(kg, kg.relation_ids["bought"]), kg, "bought")
                      if "bought" in kg.relation_ids else {})
        report["teacher"] = {"epochs": trained.epochs_run, "seconds": trained.train_seconds, "valid": trained.best_valid,
                             "recommend": teacher_rec, "popularity_baseline": popularity}
        typer.echo(f"teacher: valid MRR {trained.best_valid['mrr']:.4f} in {trained.train_seconds:.0f} s"
                   + (f"; Recall@10 for bought {teacher_rec['recall_at_10']:.3f} vs popularity "
                      f"{popularity['recall_at_10']:.3f}" if teacher_rec else ""))

        chosen_recipe = load_recipe(recipe)
        _stage(f"compress: recipe {chosen_recipe.name} ({chosen_recipe.description})")
        compressed = run_recipe(teacher, kg, chosen_recipe, max_time_s=budget,
                                on_step=lambda s: typer.echo(
                                    f"{s.recipe} {s.step}: {s.bytes:,} bytes ({s.compression:.1f}x smaller), MRR "
                                    f"{s.mrr:.4f} = {100 * s.teacher_share:.1f}% of the teacher's "
                                    f"{compressed_teacher(s):.4f}"))
        for c in compressed.candidates:
            typer.echo(f"candidate {c.recipe}: validation MRR {c.valid_mrr:.4f}" + (" <- kept" if c.chosen else ""))
        vocab = Vocabulary.of(kg)
        save_checkpoint(out / "student.ckpt", compressed.model, vocab,
                        {"data": kg.name, "recipe": compressed.recipe, "qat_bits": compressed.bits,
                         "export_bits": compressed.export_bits})
        report["compress"] = {"recipe": compressed.recipe, "teacher_test": compressed.teacher,
                              "steps": [asdict(s) for s in compressed.steps],
                              "candidates": [asdict(c) for c in compressed.candidates]}

        student = load_checkpoint(out / "student.ckpt")
        chosen = profile or profile_for_checkpoint(student.metadata, fallback=_best_profile())  # as kgedge export
        _stage(f"export: profile {chosen}")
        result = export_bundle(student, chosen, out / "bundle", kg=kg, overwrite=True)
        report["export"] = {"profile": chosen, "sizes": result.manifest["sizes"], "validation": result.manifest["validation"]}
        v = result.manifest["validation"]
        typer.echo(f"bundle {out / 'bundle'}: {result.manifest['sizes']['bundle_bytes']:,} bytes; test MRR "  # type: ignore[index]
                   f"torch {v['mrr_torch']:.4f}, ONNX fp32 {v['mrr_fp32']:.4f}, ONNX {chosen} {v['mrr_export']:.4f}; "  # type: ignore[index]
                   f"top-10 overlap {v['topk_overlap']:.3f}")  # type: ignore[index]

        _stage("query: the torch-free runtime")
        edge = EdgeModel.load(out / "bundle")
        examples = _examples(kg)
        answers = {}
        for label, (head, relation, kwargs) in examples.items():
            ranked = (edge.recommend(head, k=5) if relation == "recommend" else edge.answer(head, relation, k=5, **kwargs))
            answers[label] = ranked
            typer.echo(f"{label}: " + ", ".join(f"{n} ({s:.2f})" for n, s in ranked))
        report["queries"] = answers

        _stage("bench")
        report["bench"] = _bench(out / "bundle")
        report["seconds"] = time.perf_counter() - started
        (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    typer.echo(f"\ndone in {report['seconds']:.0f} s; report: {out / 'report.json'}")


def compressed_teacher(step) -> float:  # noqa: ANN001
    return step.mrr / max(step.teacher_share, 1e-12)


def _examples(kg) -> dict[str, tuple[str, str, dict]]:  # noqa: ANN001
    """A recommendation, a compatibility lookup and an FAQ lookup, where the KG has those relations."""
    examples: dict[str, tuple[str, str, dict]] = {}
    for relation, label, extra in (("bought", "recommend", {}), ("compatible_with", "compatible_with", {}),
                                   ("answers", "answers", {})):
        if relation in kg.relation_ids:
            r = kg.relation_ids[relation]
            head = kg.entities[int(kg.test[kg.test[:, 1] == r][0, 0])] if (kg.test[:, 1] == r).any() else None
            if head is not None:
                examples[f"({head}, {label}, ?)"] = (head, "recommend" if relation == "bought" else relation, extra)
    if not examples:
        h, r, _ = kg.test[0]
        examples[f"({kg.entities[h]}, {kg.relations[r]}, ?)"] = (kg.entities[h], kg.relations[r], {})
    return examples


def _bench(bundle: Path) -> dict[str, object]:
    """``kgedge bench`` of the bundle: latency percentiles, throughput, memory, size."""
    from kgedge.bench.latency import bench_bundle

    figures = bench_bundle(bundle).to_dict()
    print_table([{k: figures[k] for k in ("threads", "p50_us", "p95_us", "p99_us", "qps_batch_1", "qps_batch_64",
                                           "bundle_bytes", "load_s") if k in figures}])
    return figures


def register(app: typer.Typer) -> None:
    app.command()(demo)
