"""The HTTP endpoint: good answers, every kind of bad request, and it keeps serving after them."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from bundle_factory import TinyBundle, tiny  # noqa: F401 (fixture)

from kgedge.runtime import EdgeModel
from kgedge.runtime.server import EdgeServer, ServerLimits


@pytest.fixture(scope="module")
def model(tiny: TinyBundle) -> EdgeModel:
    return EdgeModel.load(tiny.path)


@pytest.fixture(scope="module")
def server(model: EdgeModel) -> Iterator[EdgeServer]:
    server = EdgeServer(model, "127.0.0.1", 0, ServerLimits(max_k=20, max_batch=8))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def call(server: EdgeServer, method: str, path: str, body: Any = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read())
    conn.close()
    return status, payload


def named(ranked: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"name": n, "score": s} for n, s in ranked]


def test_binds_to_loopback_by_default(model: EdgeModel) -> None:
    server = EdgeServer(model, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_health(server: EdgeServer, model: EdgeModel) -> None:
    status, body = call(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["entities"] == model.num_entities
    assert body["relations"] == model.relations and body["format_version"] == 1


def test_query_and_recommend_answer_like_the_library(server: EdgeServer, model: EdgeModel) -> None:
    status, body = call(server, "POST", "/query", {"head": "intent_2", "relation": "answers", "k": 4})
    assert status == 200 and body["results"] == named(model.answer("intent_2", "answers", k=4))
    status, body = call(server, "POST", "/query", {"head": "user_1", "relation": "bought", "types": ["accessory"],
                                                   "exclude_seen": True, "k": 5})
    assert status == 200 and body["results"] == named(model.answer("user_1", "bought", k=5, types=["accessory"],
                                                                   exclude_seen=True))
    status, body = call(server, "POST", "/recommend", {"user": "user_4", "k": 3})
    assert status == 200 and body["results"] == named(model.recommend("user_4", k=3))
    status, body = call(server, "POST", "/recommend", {"user": "user_4", "k": 12, "exclude_seen": False,
                                                       "types": "product"})
    assert status == 200 and body["results"] == named(model.recommend("user_4", k=12, exclude_seen=False))


def test_batches_answer_each_query(server: EdgeServer, model: EdgeModel) -> None:
    queries = [{"head": "user_0", "relation": "bought", "k": 3}, {"head": "product_1", "relation": "bought^-1", "k": 2},
               {"head": "user_5", "relation": "bought", "k": 3}]
    status, body = call(server, "POST", "/query", {"queries": queries})
    assert status == 200
    assert body["results"] == [named(model.answer(q["head"], q["relation"], k=q["k"])) for q in queries]
    status, body = call(server, "POST", "/recommend", {"queries": [{"user": "user_0"}, {"user": "user_1", "k": 2}]})
    assert status == 200 and body["results"] == [named(model.recommend("user_0")), named(model.recommend("user_1", k=2))]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), [
    ("POST", "/query", {"head": "usr_1", "relation": "bought"}, 404, "did you mean 'user_1'"),
    ("POST", "/recommend", {"user": "user_1", "relation": "bougt"}, 404, "did you mean 'bought'"),
    ("POST", "/query", {"head": "user_1", "relation": "bought", "types": ["prodct"]}, 404, "unknown type"),
    ("POST", "/nope", {}, 404, "no endpoint POST /nope"),
    ("GET", "/query", None, 404, "no endpoint GET /query"),
    ("POST", "/query", {"relation": "bought"}, 400, "missing field 'head'"),
    ("POST", "/query", {"head": "user_1", "relation": "bought", "k": "5"}, 400, "field 'k' has the wrong type"),
    ("POST", "/query", {"head": "user_1", "relation": "bought", "k": True}, 400, "field 'k' has the wrong type"),
    ("POST", "/query", [1, 2], 400, "must be a JSON object"),
    ("POST", "/query", {"queries": []}, 400, "non-empty list"),
    ("POST", "/query", {"head": "user_1", "relation": "bought", "k": 0}, 422, "k=0 is out of range; allowed: 1..20"),
    ("POST", "/query", {"head": "user_1", "relation": "bought", "k": 21}, 422, "k=21 is out of range"),
    ("POST", "/recommend", {"user": "user_1", "k": 13}, 422, "k=13 is more than the 12 entities"),
    ("POST", "/recommend", {"queries": [{"user": "user_1"}] * 9}, 422, "9 queries is over the limit of 8"),
])
def test_bad_requests_get_clear_errors(server: EdgeServer, method: str, path: str, body: Any, status: int,
                                       fragment: str) -> None:
    got, payload = call(server, method, path, body)
    assert got == status and fragment in payload["error"]
    if status == 404 and "did you mean" in fragment:
        assert payload["suggestions"]


def test_bad_json_and_oversized_bodies(server: EdgeServer) -> None:
    status, payload = call(server, "POST", "/query", raw=b'{"head": "user_1",')
    assert status == 400 and "not valid UTF-8 JSON" in payload["error"]
    status, payload = call(server, "POST", "/query", raw=b"\xff\xfe")
    assert status == 400
    big = json.dumps({"head": "user_1", "relation": "bought", "pad": "x" * 70_000}).encode()
    status, payload = call(server, "POST", "/query", raw=big)
    assert status == 413 and "over the limit of 65,536 bytes" in payload["error"]


def test_huge_declared_length_is_refused_without_reading(server: EdgeServer) -> None:
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/query")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    conn.close()


def test_missing_content_length_gets_411(server: EdgeServer) -> None:
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /query HTTP/1.0\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 411")


def test_keeps_serving_after_bad_requests_and_under_load(server: EdgeServer, model: EdgeModel) -> None:
    for raw in (b"{", b"[]", b'{"head": 1, "relation": "bought"}'):
        assert call(server, "POST", "/query", raw=raw)[0] == 400
    assert call(server, "GET", "/health")[0] == 200
    users = [f"user_{i}" for i in range(6)] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda u: call(server, "POST", "/recommend", {"user": u, "k": 5}), users))
    assert replies == [(200, {"results": named(model.recommend(u, k=5))}) for u in users]
