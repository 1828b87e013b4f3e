"""``kgedge train`` and ``kgedge evaluate``."""

from __future__ import annotations

import json
from contextlib import ExitStack
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

DATA_HELP = ("Dataset directory or built-in name: demo, nations, umls, wordnet-rr (the last three under $KGEDGE_DATA), "
             "or kinships when the bench extra installed pykeen (read from its wheel).")


def train(
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    model: str = typer.Option(..., "--model", help="transe, distmult, complex, rotate, or a graph teacher: gcn, gat, rgcn."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (safetensors), e.g. runs/umls.ckpt."),
    dim: int = typer.Option(256, "--dim", help="Embedding dimension (complex models: complex dimensions)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Most epochs; early stopping on validation MRR usually ends sooner."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Queries per step."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (model default if unset)."),
    loss: str | None = typer.Option(None, "--loss", help="1n_ce, 1n_bce or nssa."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adagrad or adam."),
    regularizer: str | None = typer.Option(None, "--regularizer", help="n3, l2 or none."),
    reg_weight: float | None = typer.Option(None, "--reg-weight", help="Regularisation weight."),
    label_smoothing: float | None = typer.Option(
        None, "--label-smoothing", help="Label smoothing of the 1-N losses, in [0, 1)."),
    relation_temperature: bool | None = typer.Option(
        None, "--relation-temperature/--no-relation-temperature",
        help="The 1-N losses learn a softmax temperature per relation (the model and its ranking stay the same; "
        "default on for rotate)."),
    num_negatives: int | None = typer.Option(None, "--num-negatives", help="Negative tails per triple (--loss nssa)."),
    margin: float | None = typer.Option(
        None, "--margin", help="Margin gamma of the distance models under --loss nssa."),
    type_constrained: bool = typer.Option(
        False, "--type-constrained",
        help="--loss nssa draws negative tails of the true tail's type (needs entity_types.tsv).",
    ),
    dropout: float | None = typer.Option(None, "--dropout", help="Dropout on the query vector in training, in [0, 1)."),
    init_scale: float | None = typer.Option(
        None, "--init-scale", help="Std of the normal initialisation (model default if unset)."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Validate every this many epochs."),
    patience: int | None = typer.Option(
        None, "--patience", help="Stop after this many validations without improvement."),
    max_time: float | None = typer.Option(None, "--max-time", help="Training budget in seconds; the best model so far is kept."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (runs repeat exactly on CPU)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from OUT.resume.pt."),
    distributed: bool = typer.Option(
        False, "--distributed",
        help="Data-parallel over the processes torchrun starts (on by itself under torchrun); "
        "--batch-size is the global batch.",
    ),
    option: list[str] = typer.Option(
        [], "--option",
        help="Model option KEY=VALUE (JSON value), repeatable; transe: distance=l1 (default) or l2 (a matrix "
        "product: much faster to train and serve); graph teachers: decoder=complex, num_layers=2, "
        "fanouts=[10,10] (neighbour-sampled mini-batches, with --loss nssa), num_bases, num_heads.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Train a KG-embedding teacher with per-model defaults and early stopping on validation MRR."""
    require_torch("train")
    import torch

    from kgedge.data.sources import load_data
    from kgedge.models import ModelConfig, resolve
    from kgedge.train.config import default_model_options, default_train_config, l1_loss_for_size
    from kgedge.train.distributed import DistributedContext, launched_by_torchrun, process_group, train_distributed
    from kgedge.train.trainer import train_model

    with user_errors():
        resolve(model)
        kg = load_data(data)
        config = default_train_config(
            model.lower(), epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, optimizer=optimizer,
            regularizer=regularizer, reg_weight=reg_weight, max_time_s=max_time, seed=seed,
            label_smoothing=label_smoothing, relation_temperature=relation_temperature,
            num_negatives=num_negatives, margin=margin,
            type_constrained=type_constrained or None, eval_every=eval_every, patience=patience,
        )
        initialisation = {k: v for k, v in (("dropout", dropout), ("init_scale", init_scale)) if v is not None}
        model_config = ModelConfig(
            model=model.lower(), num_entities=kg.num_entities, num_relations=2 * kg.num_relations, dim=dim,
            **{**default_model_options(model.lower(), parse_options(option)), **initialisation},
        )
        _check_options(model_config)
        sized = l1_loss_for_size(config, model_config.model, model_config.options, kg.num_entities, dim,
                                 loss_chosen=loss is not None)
        if sized is not config:
            typer.secho(f"{model_config.model} with the L1 distance at {kg.num_entities:,} entities: training with "
                        "sampled negatives (--loss nssa), as 1-N steps would score every entity without a matrix "
                        "product; --loss 1n_ce forces them, --option distance=l2 keeps 1-N fast", err=True)
            config = sized
        sampling = [name for name, value in (("--num-negatives", num_negatives), ("--margin", margin),
                                              ("--type-constrained", type_constrained or None)) if value is not None]
        if sampling and config.loss != "nssa":
            raise ValueError(f"{', '.join(sampling)} set the negative sampling of --loss nssa; "
                             f"this run's loss is {config.loss}")
        if config.type_constrained and len(kg.type_names) < 2:
            raise ValueError(f"--type-constrained needs entity types, and {kg.name} has one (no entity_types.tsv)")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        with ExitStack() as stack:
            context: DistributedContext | None = None
            if distributed or launched_by_torchrun():
                context = stack.enter_context(process_group(device))
                if not context.is_main:  # the other ranks train silently
                    train_distributed(kg, model_config, config, context, out=out, resume=resume)
                    return
            bar = stack.enter_context(progress_bar())
            task = bar.add_task(f"train {model}", total=None, info="")

            def on_eval(epoch: int, metrics: dict[str, float], improved: bool) -> None:
                mark = " *" if improved else ""
                bar.console.print(f"epoch {epoch}: valid MRR {metrics['mrr']:.4f}{mark}")

            callbacks = {"on_step": training_progress(bar, task), "on_eval": None if json_out else on_eval}
            if context is not None:
                result = train_distributed(kg, model_config, config, context, out=out, resume=resume, **callbacks)
            else:
                result = train_model(kg, model_config, config, out=out, device=device, resume=resume, **callbacks)
    summary = {
        "checkpoint": str(out), "model": model.lower(), "dim": dim, "data": kg.name,
        "epochs": result.epochs_run, "best_epoch": result.best_epoch, "stop_reason": result.stop_reason,
        "train_seconds": round(result.train_seconds, 2), "valid_mrr": result.best_valid.get("mrr", 0.0),
    }
    if context is not None:
        summary["processes"] = context.world_size
    if json_out:
        print_json(summary)
    else:
        print_table([summary], title="trained")


def _check_options(config) -> None:  # noqa: ANN001 (ModelConfig; torch-only import)
    """Read the options as the model will, so that unknown or bad ones fail before training (no tables built)."""
    from kgedge.models import resolve
    from kgedge.models.factored import ENTITY_RANK, entity_rank
    from kgedge.models.graph_encoder import GraphEncoderModel
    from kgedge.models.transe import DISTANCE, TransE, transe_distance

    cls = resolve(config.model)
    if issubclass(cls, GraphEncoderModel):
        cls.options_class.parse(dict(config.options))
        return
    allowed = {ENTITY_RANK, DISTANCE} if cls is TransE else {ENTITY_RANK}
    unknown = sorted(set(config.options) - allowed)
    if unknown:
        raise ValueError(f"--option {', '.join(unknown)}: {config.model} takes only {' and '.join(sorted(allowed))} "
                         "(entity_rank: a factored entity table; distance: TransE's l1 or l2); the other options "
                         "are for the graph teachers gcn, gat, rgcn")
    entity_rank(config.options)
    if cls is TransE:
        transe_distance(config.options)


def parse_options(pairs: list[str]) -> dict[str, object]:
    """``["k=v", ...]`` as a dict; each value is read as JSON (``[10,10]``, ``2``, ``true``), else kept as text.

    Raises:
        ValueError: an item without ``=`` or a key given twice.
    """
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE, e.g. --option fanouts=[10,10]")
        if key in options:
            raise ValueError(f"--option {key} is given twice")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def evaluate(
    artifact: Path = typer.Argument(..., help="A checkpoint (.ckpt) or an exported bundle directory."),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    split: str = typer.Option("test", "--split", help="train, valid or test."),
    recommend_relation: str | None = typer.Option(
        None, "--recommend-relation", help="Also report Recall@10/NDCG@10 for this relation (e.g. bought)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (mrr, hits_at_1, hits_at_3, hits_at_10, ...)."),
) -> None:
    """Filtered MRR and Hits@1/3/10 in both directions (realistic rank for ties)."""
    from kgedge.data.sources import load_data
    from kgedge.evaluate import evaluate_link_prediction, recommendation_metrics

    with user_errors():
        kg = load_data(data)
        score_fn, kind = _scorer_for(artifact, kg)
        with progress_bar() as bar:
            total = 2 * len(kg.split(split))  # type: ignore[arg-type]
            task = bar.add_task(f"evaluate {split}", total=total, info="")
            metrics = evaluate_link_prediction(score_fn, kg, split, progress=lambda n: bar.advance(task, n))  # type: ignore[arg-type]
        if recommend_relation:
            metrics.update(recommendation_metrics(score_fn, kg, recommend_relation, split))  # type: ignore[arg-type]
    result = {"artifact": str(artifact), "kind": kind, "data": kg.name, "split": split, **metrics}
    if json_out:
        print_json(result)
    else:
        print_table([{k: v for k, v in result.items() if k != "artifact"}], title=str(artifact))


def _scorer_for(artifact: Path, kg):  # noqa: ANN001, ANN202
    """A numpy scorer for a checkpoint (torch) or a bundle (onnxruntime), checked against ``kg``."""
    if artifact.is_dir():
        from kgedge.runtime import EdgeModel

        edge = EdgeModel.load(artifact)
        _check_vocab(artifact, edge.entities, kg.entities, edge.relations, kg.relations)
        return edge.score_all, "bundle"
    require_torch("evaluate CKPT")
    from kgedge.train.checkpoint import load_checkpoint
    from kgedge.train.scorer import model_scorer

    checkpoint = load_checkpoint(artifact)
    _check_vocab(artifact, checkpoint.vocab.entities, kg.entities, checkpoint.vocab.relations, kg.relations)
    return model_scorer(checkpoint.model), "checkpoint"


def _check_vocab(artifact: Path, entities: list[str], kg_entities: list[str], relations: list[str], kg_relations: list[str]) -> None:
    if list(entities) != list(kg_entities) or list(relations) != list(kg_relations):
        raise ValueError(
            f"{artifact} was trained on other data: its {len(entities)} entities / {len(relations)} relations "
            f"do not match the {len(kg_entities)} / {len(kg_relations)} of --data"
        )


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)
