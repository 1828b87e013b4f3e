"""A small JSON-over-HTTP endpoint for one ``EdgeModel`` (standard library only).

Endpoints::

    GET  /health                                   -> {"status": "ok", "model": ..., ...}
    POST /query      {"head", "relation", "k"?, "types"?, "exclude_seen"?}
    POST /recommend  {"user", "k"?, "types"?, "exclude_seen"?, "relation"?}
    POST /query | /recommend  {"queries": [request, ...]}  (batch; answered in graph runs per group)

A single request answers ``{"results": [{"name", "score"}, ...]}``, a batch
``{"results": [[...], ...]}``. Errors answer ``{"error": message}`` with 400 (malformed JSON or
fields), 404 (unknown path or name, with ``"suggestions"``), 408 (a body that stalls), 411/413 (body
length), 422 (values out of limits, e.g. ``k``) or 500; the server keeps serving after any of them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kgedge.runtime.errors import QueryError, UnknownNameError
from kgedge.runtime.model import EdgeModel

log = logging.getLogger(__name__)

# An oversized body up to this size is read and dropped before answering 413; beyond it the
# connection is closed at once (bytes).
DRAIN_BYTES = 1 << 20
# (head, relation, k, types, exclude_seen): one query, normalised
Query = tuple[str, str, int, tuple[str, ...] | None, bool]


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for.

    Attributes:
        max_body_bytes: larger bodies get 413 without being read (bytes).
        max_k: the most results per query.
        max_batch: the most queries in one ``{"queries": [...]}`` request.
        timeout_s: a client that sends nothing for this long is dropped (seconds).
    """

    max_body_bytes: int = 64 * 1024
    max_k: int = 1000
    max_batch: int = 256
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_k", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerLimits.{name}={value!r} is invalid; allowed: an int >= 1")
        if not self.timeout_s > 0:
            raise ValueError(f"ServerLimits.timeout_s={self.timeout_s!r} is invalid; allowed: seconds > 0")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, {"error": message, **extra}


class EdgeServer(ThreadingHTTPServer):
    """A threading HTTP server that answers with ``model``; ``server_address`` has the bound port."""

    daemon_threads = True

    def __init__(self, model: EdgeModel, host: str = "127.0.0.1", port: int = 8080,
                 limits: ServerLimits = ServerLimits()) -> None:
        self.model, self.limits = model, limits
        super().__init__((host, port), _Handler)


def _field(item: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in item:
        if default is ...:
            raise HTTPError(400, f"missing field {name!r}")
        return default
    value = item[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise HTTPError(400, f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _query(item: Any, endpoint: str, limits: ServerLimits) -> Query:
    """One request object as a normalised query, or HTTPError 400/422."""
    if not isinstance(item, dict):
        raise HTTPError(400, "each request must be a JSON object")
    if endpoint == "/query":
        head, relation = _field(item, "head", str), _field(item, "relation", str)
        types, exclude_seen = _field(item, "types", (list, str, type(None)), None), _field(item, "exclude_seen", bool, False)
    else:
        head, relation = _field(item, "user", str), _field(item, "relation", str, "bought")
        types, exclude_seen = _field(item, "types", (list, str), ["product"]), _field(item, "exclude_seen", bool, True)
    k = _field(item, "k", int, 10)
    if not 1 <= k <= limits.max_k:
        raise HTTPError(422, f"k={k} is out of range; allowed: 1..{limits.max_k}")
    if types is not None:
        types = (types,) if isinstance(types, str) else tuple(types)
        if not types or not all(isinstance(t, str) for t in types):
            raise HTTPError(400, "field 'types' must be a non-empty list of type names")
    return head, relation, k, types, exclude_seen


def answer(model: EdgeModel, queries: list[Query]) -> list[list[dict[str, Any]]]:
    """Answer normalised queries, one graph run per group of equal ``(k, types, exclude_seen)``."""
    results: list[list[dict[str, Any]]] = [[] for _ in queries]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (_, _, k, types, exclude_seen) in enumerate(queries):
        groups.setdefault((k, types, exclude_seen), []).append(i)
    for (k, types, exclude_seen), members in groups.items():
        ranked = model.answer_batch([queries[i][:2] for i in members], k, types=types, exclude_seen=exclude_seen)
        for i, rows in zip(members, ranked):
            results[i] = [{"name": name, "score": score} for name, score in rows]
    return results


class _Handler(BaseHTTPRequestHandler):
    server: EdgeServer
    server_version = "kgedge"

    def setup(self) -> None:
        self.timeout = self.server.limits.timeout_s
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guarded(self, handle: Any) -> None:
        try:
            self._send(200, handle())
        except HTTPError as err:
            self._send(err.status, err.body)
        except UnknownNameError as err:
            self._send(404, {"error": str(err), "kind": err.kind, "name": err.name, "suggestions": list(err.suggestions)})
        except QueryError as err:
            self._send(422, {"error": str(err)})
        except Exception:  # a bug must not stop the server: log it, answer 500, keep serving
            log.exception("internal error answering %s %s", self.command, self.path)
            self._send(500, {"error": "internal error; see the server log"})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._guarded(self._health)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _health(self) -> dict[str, Any]:
        if urlsplit(self.path).path != "/health":
            raise HTTPError(404, f"no endpoint GET {self.path}; try GET /health, POST /query, POST /recommend")
        model = self.server.model
        return {"status": "ok", "model": model.manifest["model"].get("name"), "entities": model.num_entities,
                "relations": model.relations, "types": model.types,
                "format_version": model.manifest["format_version"]}

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise HTTPError(411, "send a Content-Length header with the JSON body")
        if not (length.isascii() and length.isdigit()):
            self.close_connection = True
            raise HTTPError(400, f"bad Content-Length {length!r}")
        limit = self.server.limits.max_body_bytes
        if int(length) > limit:
            self.close_connection = True
            if int(length) <= DRAIN_BYTES:  # read it away, else closing with unread data resets the
                self._discard(int(length))  # connection and the client may never see the 413
            raise HTTPError(413, f"body of {int(length):,} bytes is over the limit of {limit:,} bytes")
        try:
            raw = self.rfile.read(int(length))
        except TimeoutError:  # a client that stalls mid-body: its fault, not an internal error
            self.close_connection = True
            raise HTTPError(408, f"the body did not arrive within {self.server.limits.timeout_s:g} s") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, an int of > 4300 digits, deep nesting
            raise HTTPError(400, f"body is not valid UTF-8 JSON: {err}") from None

    def _discard(self, remaining: int) -> None:
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)

    def _post(self) -> dict[str, Any]:
        endpoint = urlsplit(self.path).path
        if endpoint not in ("/query", "/recommend"):
            raise HTTPError(404, f"no endpoint POST {endpoint}; try POST /query or POST /recommend")
        body, limits = self._read_json(), self.server.limits
        if isinstance(body, dict) and "queries" in body:
            items = body["queries"]
            if not isinstance(items, list) or not items:
                raise HTTPError(400, "field 'queries' must be a non-empty list of request objects")
            if len(items) > limits.max_batch:
                raise HTTPError(422, f"{len(items)} queries is over the limit of {limits.max_batch} per request")
            return {"results": answer(self.server.model, [_query(i, endpoint, limits) for i in items])}
        return {"results": answer(self.server.model, [_query(body, endpoint, limits)])[0]}
