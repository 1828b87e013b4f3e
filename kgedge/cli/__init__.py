"""The ``kgedge`` command line: a thin layer over the library that prints tables, bars and JSON.

Heavy imports (torch, onnx) happen inside commands, so ``--help`` and the runtime commands work on an
edge install that has neither.
"""

from __future__ import annotations

import typer

from kgedge import __version__
from kgedge.cli import compress_cmds, data_cmd, demo_cmd, export_cmds, model_cmds, runtime_cmds
from kgedge.cli import bench_cmd
from kgedge.cli import embed_cmd

app = typer.Typer(
    name="kgedge",
    help="Knowledge-graph models from training to the edge: train, compress, export, query, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kgedge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    """kgedge: train a KG model, compress it, export it to ONNX int8 and answer queries on a device."""
    from kgedge.cli.common import setup_logging

    setup_logging(verbose)


app.add_typer(data_cmd.app, name="data")
model_cmds.register(app)
runtime_cmds.register(app)
compress_cmds.register(app)
export_cmds.register(app)
bench_cmd.register(app)
demo_cmd.register(app)
embed_cmd.register(app)


def main() -> None:
    app()
