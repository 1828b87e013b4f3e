"""``kgedge data generate`` and ``kgedge data stats``."""

from __future__ import annotations

from pathlib import Path

import typer

from kgedge.cli.common import print_json, print_table, user_errors

app = typer.Typer(help="Generate the demo KG and inspect data sets.", no_args_is_help=True)


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="Directory to write train/valid/test.txt and entity_types.tsv."),
    entities: int = typer.Option(2000, "--entities", help="Total entities (users, products, brands, ...)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out directory."),
) -> None:
    """Generate the synthetic shop KG (users, products, brands, categories, accessories, intents)."""
    from kgedge.data.generate import ShopConfig, generate_shop_kg, write_shop_kg

    with user_errors():
        kg = generate_shop_kg(ShopConfig(num_entities=entities, seed=seed))
        write_shop_kg(kg, out, overwrite=overwrite)
    typer.echo(f"wrote {len(kg.train)} train, {len(kg.valid)} valid, {len(kg.test)} test triples to {out}")


@app.command()
def stats(
    data: str = typer.Option(..., "--data", help="Dataset directory or built-in name (demo, nations, umls, wordnet-rr)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Counts of a data set: entities, relations, triples per split, per type and per relation."""
    from kgedge.data.sources import load_data

    with user_errors():
        summary = load_data(data).stats()
    if json_out:
        print_json(summary)
        return
    print_table([{k: summary[k] for k in ("name", "entities", "relations", "train", "valid", "test")}])
    print_table([{"relation": r, "train triples": c} for r, c in summary["train_per_relation"].items()])
    print_table([{"type": t, "entities": c} for t, c in summary["types"].items()])
