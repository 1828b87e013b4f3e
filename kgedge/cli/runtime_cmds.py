"""``kgedge query``, ``kgedge recommend`` and ``kgedge serve``: the on-device commands (no torch)."""

from __future__ import annotations

import ipaddress
import signal
from pathlib import Path

import typer

from kgedge.cli.common import print_json, print_table, user_errors

BUNDLE_HELP = "A bundle directory made by `kgedge export`, or a .tar/.tar.gz of one."
THREADS_HELP = "onnxruntime threads per operator (default: the bundle's setting; 0 = all cores)."


def _load(bundle: Path, threads: int | None):  # noqa: ANN202 (EdgeModel, imported lazily)
    from kgedge.runtime import EdgeModel

    return EdgeModel.load(bundle, intra_op_threads=threads)


def _show(ranked: list[tuple[str, float]], json_out: bool, title: str) -> None:
    if json_out:
        print_json([{"name": name, "score": score} for name, score in ranked])
    elif not ranked:
        typer.echo(f"{title}: no results (every candidate is excluded)")
    else:
        print_table([{"rank": i, "name": name, "score": score} for i, (name, score) in enumerate(ranked, 1)], title=title)


def query(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP),
    head: str = typer.Option(..., "--head", help="Head entity name, e.g. intent_3."),
    relation: str = typer.Option(..., "--relation", help="Relation name; NAME^-1 asks for heads instead."),
    k: int = typer.Option(10, "-k", "--k", help="Number of answers."),
    types: str | None = typer.Option(None, "--types", help="Only entities of these comma-separated types."),
    threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    json_out: bool = typer.Option(False, "--json", help='Print a JSON list of {"name", "score"}.'),
) -> None:
    """Answer (HEAD, RELATION, ?) with a bundle: ranked names and scores."""
    with user_errors():
        model = _load(bundle, threads)
        ranked = model.answer(head, relation, k, types=_split(types))
    _show(ranked, json_out, f"({head}, {relation}, ?)")


def recommend(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP),
    user: str = typer.Option(..., "--user", help="User entity name, e.g. user_17."),
    k: int = typer.Option(10, "-k", "--k", help="Number of recommendations."),
    relation: str = typer.Option("bought", "--relation", help="Relation that links users to items."),
    types: str = typer.Option("product", "--types", help="Comma-separated item types to recommend."),
    include_seen: bool = typer.Option(False, "--include-seen", help="Also return items the user already has."),
    threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    json_out: bool = typer.Option(False, "--json", help='Print a JSON list of {"name", "score"}.'),
) -> None:
    """Recommend items a user does not have yet (train facts and on-device additions excluded)."""
    with user_errors():
        model = _load(bundle, threads)
        ranked = model.recommend(user, k, exclude_seen=not include_seen, types=_split(types), relation=relation)
    _show(ranked, json_out, f"recommendations for {user}")


def serve(
    bundle: Path = typer.Argument(..., help=BUNDLE_HELP),
    port: int = typer.Option(8080, "--port", help="TCP port (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; the default is reachable from this machine only."),
    threads: int | None = typer.Option(None, "--threads", help=THREADS_HELP),
    max_k: int = typer.Option(1000, "--max-k", help="Most results one query may ask for."),
    max_batch: int = typer.Option(256, "--max-batch", help="Most queries in one batch request."),
) -> None:
    """Serve a bundle over HTTP: GET /health, POST /query, POST /recommend (JSON; batch with {"queries": [...]})."""
    from kgedge.runtime.server import EdgeServer, ServerLimits

    with user_errors():
        if not 0 <= port <= 65535:
            raise ValueError(f"--port {port} is invalid; allowed: 0..65535")
        model = _load(bundle, threads)
        try:
            server = EdgeServer(model, host, port, ServerLimits(max_k=max_k, max_batch=max_batch))
        except OSError as err:
            raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port") from None
    if not _is_loopback(host):
        typer.secho(f"warning: {host} is reachable from other machines and the endpoint has no authentication",
                    fg=typer.colors.YELLOW, err=True)
    bound_host, bound_port = server.server_address[:2]
    typer.echo(f"serving {bundle} on http://{bound_host}:{bound_port} (Ctrl-C stops)")
    # SIGTERM (what service managers send) stops it as Ctrl-C does; so does SIGINT unless this process was
    # started with SIGINT ignored (a background job of a script), where Python leaves it ignored
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _split(types: str | None) -> list[str] | None:
    if types is None:
        return None
    names = [t.strip() for t in types.split(",") if t.strip()]
    if not names:
        raise typer.BadParameter("give at least one type name, e.g. --types product,accessory", param_hint="--types")
    return names


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def register(app: typer.Typer) -> None:
    app.command()(query)
    app.command()(recommend)
    app.command()(serve)
