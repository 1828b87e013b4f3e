"""``kgedge export`` and ``kgedge profiles``."""

from __future__ import annotations

from pathlib import Path

import typer

from kgedge.cli.common import print_json, print_table, require_torch, user_errors
from kgedge.cli.model_cmds import DATA_HELP


def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint written by kgedge train / distill / compress."),
    profile: str | None = typer.Option(None, "--profile", help="Profile name (kgedge profiles) or a .toml file. "
                                       "Default: int4 for a 4-bit student of kgedge compress, else x86-avx2."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (atomically)."),
    data: str | None = typer.Option(None, "--data", help=DATA_HELP + " Gives the seen-items index and the MRR check."),
    archive: bool = typer.Option(False, "--archive", help="Also write OUT.tar.gz, a single file for the device."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest's sizes and validation as JSON."),
) -> None:
    """Export a model to an ONNX top-k bundle for the device, validated against torch and fp32."""
    require_torch("export")
    from kgedge.data.sources import load_data
    from kgedge.export import ExportValidationError, export_bundle, resolve_profile
    from kgedge.export.profile import profile_for_checkpoint
    from kgedge.train.checkpoint import load_checkpoint

    with user_errors():
        loaded = load_checkpoint(checkpoint)
        chosen = resolve_profile(profile or profile_for_checkpoint(loaded.metadata))
        qat_bits = loaded.metadata.get("qat_bits")
        if qat_bits and chosen.quantized and chosen.table_bits != qat_bits:
            typer.echo(f"note: {checkpoint} was fine-tuned for {qat_bits}-bit tables; profile {chosen.name} stores "
                       f"{chosen.table_bits}-bit ones", err=True)
        kg = load_data(data) if data else None
        try:
            result = export_bundle(loaded, chosen, out, kg=kg, overwrite=overwrite, archive=archive)
        except ExportValidationError as err:
            raise ValueError(f"export refused, nothing written: {err}") from None
    manifest = result.manifest
    summary = {
        "bundle": str(result.path),
        "archive": str(result.archive) if result.archive else None,
        "profile": chosen.name,
        "model": manifest["model"]["name"],  # type: ignore[index]
        "dim": manifest["model"]["dim"],  # type: ignore[index]
        "num_entities": manifest["num_entities"],
        **manifest["sizes"],  # type: ignore[dict-item]
        **{k: v for k, v in manifest["validation"].items()},  # type: ignore[union-attr]
    }
    if json_out:
        print_json(summary)
    else:
        print_table([{"field": k, "value": v} for k, v in summary.items() if v is not None], title="exported")


def profiles(json_out: bool = typer.Option(False, "--json", help="Print the profiles as JSON.")) -> None:
    """List the export profiles (export_profiles/*.toml) and whether this CPU runs each natively."""
    from kgedge.export.profile import available_profiles, cpu_supports, load_profile

    with user_errors():
        rows = []
        for name, path in available_profiles().items():
            p = load_profile(path)
            rows.append({"name": name, "arch": p.arch, "format": p.format, "table_bits": p.table_bits,
                         "weights": p.weight_type if p.quantized else "float32",
                         "threads": p.session.intra_op_num_threads, "this_cpu": cpu_supports(p)})
    print_json(rows) if json_out else print_table(rows, title="export profiles")


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command()(profiles)
