"""``kgedge embed``: a lightweight embedding (DeepWalk, node2vec, MF) with fitted relations, as a checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from kgedge.cli.common import print_json, print_table, require_torch, user_errors
from kgedge.cli.model_cmds import DATA_HELP


def embed(
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    method: str = typer.Option(..., "--method", help="deepwalk, node2vec or mf."),
    out: Path = typer.Option(..., "--out", help="Checkpoint to write: a plain distmult checkpoint (safetensors)."),
    dim: int = typer.Option(128, "--dim", help="Embedding dimension (MF: number of factors)."),
    fine_tune: int = typer.Option(
        0, "--fine-tune", help="Epochs of fine-tuning entities with the relations after the frozen fit (0: none)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed for walks, skip-gram and SVD."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Embed the entity graph, fit DistMult relations on the frozen table, write a distmult checkpoint."""
    require_torch("embed")
    from kgedge.data.sources import load_data
    from kgedge.embed import ScorerConfig, embed_kg, resolve_method

    with user_errors():
        resolve_method(method)
        kg = load_data(data)
        result = embed_kg(kg, method, dim=dim, seed=seed, scorer=ScorerConfig(fine_tune_epochs=fine_tune), out=out)
    summary = {
        "checkpoint": str(out), "model": "distmult", "method": result.method, "dim": dim, "data": kg.name,
        "embed_seconds": round(result.embed_seconds, 2), "fit_seconds": round(result.fit.seconds, 2),
        "fine_tuned": result.fit.fine_tuned, "valid_mrr": result.fit.valid.get("mrr", 0.0),
    }
    if json_out:
        print_json(summary)
    else:
        print_table([summary], title="embedded")


def register(app: typer.Typer) -> None:
    app.command()(embed)
