"""What every command shares: logging set-up, error reporting, JSON output, tables."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

# Errors that are the user's to fix: printed as one line, exit code 2, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FileExistsError, KeyError)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's typed errors into ``error: ...`` on stderr and exit code 2."""
    try:
        yield
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable))


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()  # numpy scalars
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def print_table(rows: list[dict[str, object]], title: str | None = None) -> None:
    """A rich table of ``rows`` (keys of the first row are the columns)."""
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), justify="right" if isinstance(rows[0][column], (int, float)) else "left")
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    Console().print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def progress_bar(transient: bool = True):  # noqa: ANN201 (rich.progress.Progress)
    """A progress bar on stderr that disappears when the work is done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        transient=transient,
    )


def training_progress(bar, task) -> Callable[[int, int, int, float, float], None]:  # noqa: ANN001
    """The trainer's ``on_step`` callback, drawing epoch, loss and throughput on ``bar``'s ``task``."""
    def on_step(epoch: int, step: int, steps: int, value: float, rate: float) -> None:
        bar.update(task, total=steps, completed=step, info=f"epoch {epoch} loss {value:.4f} {rate:,.0f} triples/s")

    return on_step


def require_torch(command: str) -> None:
    """A clear message when a training-side command runs on a runtime-only install."""
    try:
        import torch  # noqa: F401
    except ImportError:
        typer.secho(
            f"error: `kgedge {command}` needs the training extra: pip install 'kgedge[train]' "
            "(on CPU-only machines pin the CPU build: torch==2.13.0)",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2) from None
