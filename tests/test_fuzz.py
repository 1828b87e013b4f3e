"""Hostile and broken inputs: only the documented errors come out, never a traceback from deep inside.

Property-based targets (hypothesis) for every parser and the query API, a byte-flip and truncation
sweep over a real exported bundle, manifests that lie, files that would run code or escape the
bundle, and hostile HTTP requests. ``benchmarks/reliability.py`` runs the same targets at larger
example counts and records how many cases ran (``CASES``).

Targets take a :class:`World` (a tiny bundle, a loaded model, a server, scratch space) and a
hypothesis ``data`` object, so that the tests and the benchmark share them.
"""

from __future__ import annotations

import ast
import copy
import functools
import http.client
import json
import os
import re
import shutil
import socket
import threading
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_factory import TinyBundle, build_bundle, edit_manifest, fresh  # noqa: F401 (fixture)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgedge.compress.recipe import SETTING_TYPES, STEP_SETTINGS, Recipe, RecipeError, available_recipes, load_recipe
from kgedge.data.kg import KGFormatError, load_kg
from kgedge.export.profile import ExportProfile, ProfileError, available_profiles, load_profile
from kgedge.runtime import BundleError, EdgeModel, QueryError, read_bundle
from kgedge.runtime.bundle import MANIFEST_DIGEST
from kgedge.runtime.server import EdgeServer, ServerLimits

PACKAGE = Path(__file__).resolve().parents[1] / "kgedge"
#: Cases each target runs in the default suite: 100-200, about 1 s of CPU each; the suite's additions
#: must stay near 20 s on 2 shared cores. ``benchmarks/reliability.py`` runs 2,000 per target.
DEFAULT_EXAMPLES = {"kg_directory": 100, "profile_dict": 150, "profile_toml": 150, "recipe_dict": 150,
                    "recipe_toml": 150, "manifest_json": 100, "manifest_mutation": 150, "query_api": 200,
                    "serve_request": 100}
#: Cases run per target in this process (read by benchmarks/reliability.py).
CASES: Counter[str] = Counter()
DELETE = object()  # an edit that removes the field


@dataclass
class World:
    """What the targets act on; built once per test module (or benchmark run)."""

    root: Path
    tiny: TinyBundle  # never modified: the query and serve targets read it
    model: EdgeModel
    scratch: Path  # a bundle whose manifest the manifest targets rewrite
    manifest: dict[str, Any]
    server: EdgeServer
    thread: threading.Thread


def open_world(root: Path) -> World:
    tiny = build_bundle(root / "tiny")
    scratch = build_bundle(root / "scratch").path
    model = EdgeModel.load(tiny.path)
    server = EdgeServer(model, "127.0.0.1", 0, ServerLimits(max_body_bytes=4096, max_k=20, max_batch=8, timeout_s=5))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    manifest = json.loads((scratch / "manifest.json").read_text(encoding="utf-8"))
    return World(root, tiny, model, scratch, manifest, server, thread)


def close_world(world: World) -> None:
    world.server.shutdown()
    world.server.server_close()
    world.thread.join(timeout=10)


def run_target(world: World, name: str, examples: int, **options: Any) -> int:
    """Run target ``name`` for up to ``examples`` hypothesis cases; returns how many ran."""
    target, before = TARGETS[name], CASES[name]

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), **options)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        CASES[name] += 1
        target(world, data)

    run()
    return CASES[name] - before


# -- values ------------------------------------------------------------------------------------
_INTS = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]))
_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "..", "../x", "/etc/passwd", "a\x00b", "é", "NaN"]))
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, st.floats(), _TEXT)
JSON_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(_TEXT, inner, max_size=4)), max_leaves=10)


def apply_edits(raw: Any, edits: list[tuple[tuple[Any, ...], Any]]) -> Any:
    """Set (or with ``DELETE`` remove) ``value`` at each key path; a missing parent is created as a dict."""
    raw = copy.deepcopy(raw)
    for path, value in edits:
        node = raw
        for key in path[:-1]:
            if isinstance(node, dict):
                node = node.setdefault(key, {})
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                break
        else:
            last = path[-1]
            # a copy of each value: two edits that set one drawn dict at a path and inside itself
            # would otherwise build a cycle that json.dumps refuses
            value = value if value is DELETE else copy.deepcopy(value)
            if isinstance(node, dict):
                node.pop(last, None) if value is DELETE else node.__setitem__(last, value)
            elif isinstance(node, list) and isinstance(last, int) and last < len(node):
                node.pop(last) if value is DELETE else node.__setitem__(last, value)
    return raw


def _edits(paths: list[tuple[Any, ...]], values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.tuples(st.sampled_from(paths), st.one_of(values, st.just(DELETE))), max_size=3)


def _mutated_text(text: str) -> st.SearchStrategy[str]:
    """``text`` with a few characters deleted, inserted or replaced."""
    edit = st.tuples(st.integers(0, len(text)), st.sampled_from(["del", "ins", "rep"]), st.characters())

    def apply(edits: list[tuple[int, str, str]]) -> str:
        out = text
        for at, how, char in edits:
            at = min(at, len(out))
            out = out[:at] + ("" if how == "del" else char) + out[at + (how != "ins"):]
        return out

    return st.lists(edit, min_size=1, max_size=4).map(apply)


# -- the KG reader: whole directories -------------------------------------------------------
_KG_FIELD = st.one_of(st.sampled_from(["a", "b", "c", "r", "s", " a ", "é", "", " ", "x y", "\r"]), st.text(max_size=3))
_KG_LINE = st.lists(_KG_FIELD, min_size=0, max_size=4).map("\t".join)
_KG_FILE = st.one_of(st.lists(_KG_LINE, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8")),
                     st.binary(max_size=40), st.none())


def target_kg_directory(world: World, data: st.DataObject) -> None:
    directory = world.root / "kg"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt", "entity_types.tsv"):
        content = data.draw(_KG_FILE, label=name)
        if content is not None:
            (directory / name).write_bytes(content)
    try:
        kg = load_kg(directory)
    except KGFormatError as err:
        assert str(directory) in str(err)
        return
    assert kg.entities == sorted(set(kg.entities)) and kg.relations == sorted(set(kg.relations))
    assert len(kg.train) and kg.entity_types.shape == (kg.num_entities,)
    assert kg.entity_types.min() >= 0 and kg.entity_types.max() < len(kg.type_names)
    for split in (kg.train, kg.valid, kg.test):
        assert split.shape[1:] == (3,) and split.dtype == np.int64
        if len(split):
            assert split[:, [0, 2]].max() < kg.num_entities and split[:, 1].max() < kg.num_relations
            assert split.min() >= 0


# -- export profiles --------------------------------------------------------------------------
_PROFILES = {name: tomllib.loads(path.read_text(encoding="utf-8")) for name, path in available_profiles().items()}
_PROFILE_TEXTS = {name: path.read_text(encoding="utf-8") for name, path in available_profiles().items()}
_PROFILE_PATHS = ([(f,) for f in ExportProfile.__dataclass_fields__] + [("colour",), ("session", "colour")]
                  + [("session", f) for f in ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level")]
                  + [("validation", f) for f in ("max_abs_score_diff", "topk", "min_topk_overlap", "max_mrr_drop")])
_PROFILE_VALUES = st.one_of(JSON_VALUES, st.sampled_from(
    ["float", "qoperator", "dequantize", "any", "x86_64", "aarch64", "int8", "uint8", "all", "basic", 4, 7, 8, 32,
     18, 21, 8.0, 0.5, ["avx2"], "avx2", {}]))
_TOML_LITERALS = st.sampled_from(
    ['"x"', '""', "8", "8.0", "-1", "0", "true", "false", "[1, 2]", '["avx2"]', "{a = 1}", "nan", "inf", "-inf",
     "1979-05-27", "0x10", '"\\u0000"', "1e400", "9" * 5000, "[" * 600 + "]" * 600, '"qoperator"', '"uint8"', "18"])


def _toml_texts(texts: dict[str, str], keys: list[str]) -> st.SearchStrategy[str]:
    line = st.tuples(st.sampled_from(keys), _TOML_LITERALS).map(lambda kv: f"{kv[0]} = {kv[1]}")
    header = st.sampled_from(["[session]", "[validation]", "[[steps]]", "[steps]", "[[x]]", ""])
    extra = st.lists(st.one_of(line, header), min_size=1, max_size=4).map("\n".join)
    return st.one_of(
        st.sampled_from(sorted(texts)).flatmap(lambda n: _mutated_text(texts[n])),
        st.tuples(st.sampled_from(sorted(texts)), extra).map(lambda t: texts[t[0]] + "\n" + t[1] + "\n"),
        extra, st.text(max_size=80),
    )


def _check_profile(profile: ExportProfile) -> None:
    assert ExportProfile.from_dict(profile.to_dict()) == profile  # what was accepted round-trips


def target_profile_dict(world: World, data: st.DataObject) -> None:
    base = _PROFILES[data.draw(st.sampled_from(sorted(_PROFILES)), label="base")]
    raw = apply_edits(base, data.draw(_edits(_PROFILE_PATHS, _PROFILE_VALUES), label="edits"))
    try:
        profile = ExportProfile.from_dict(raw, source="fuzz.toml")
    except ProfileError as err:
        assert str(err).startswith("fuzz.toml: ")
        return
    _check_profile(profile)


def target_profile_toml(world: World, data: st.DataObject) -> None:
    path = world.root / "fuzz-profile.toml"
    keys = [p[-1] for p in _PROFILE_PATHS]
    path.write_text(data.draw(_toml_texts(_PROFILE_TEXTS, keys), label="toml"), encoding="utf-8", errors="surrogatepass")
    try:
        profile = load_profile(path)
    except ProfileError as err:
        assert str(path) in str(err)
        return
    _check_profile(profile)


# -- compression recipes ----------------------------------------------------------------------
_RECIPES = {name: tomllib.loads(path.read_text(encoding="utf-8")) for name, path in available_recipes().items()}
_RECIPE_TEXTS = {name: path.read_text(encoding="utf-8") for name, path in available_recipes().items()}
_SETTING_NAMES = sorted({key for settings_ in STEP_SETTINGS.values() for key in settings_} | {"kind", "colour"})
_RECIPE_PATHS = ([("name",), ("description",), ("export_bits",), ("steps",), ("colour",), ("choose_from",),
                  ("choose_from", 0), ("choose_from", 2)]
                 + [("steps", i, key) for i in range(3) for key in _SETTING_NAMES] + [("steps", 0), ("steps", 5)])
_RECIPE_VALUES = st.one_of(JSON_VALUES, st.sampled_from([*STEP_SETTINGS, 4, 7, 8, 32, 8.0, [], [{}], [{"kind": "qat"}],
                                                       "default", "auto", ["default", "wide-int4"]]))


def _check_recipe(recipe: Recipe) -> None:
    if recipe.choose_from:  # a choice: shipped recipe names, no steps of its own
        assert not recipe.steps and len(recipe.choose_from) >= 2 and set(recipe.choose_from) <= set(_RECIPES)
        return
    assert recipe.steps and recipe.export_bits in (4, 7, 8, 32)
    for step in recipe.steps:
        assert step.kind in STEP_SETTINGS and set(step.settings) == set(STEP_SETTINGS[step.kind])
        for name, value in step.settings.items():  # every accepted value has its setting's type
            wanted, _, nullable = SETTING_TYPES[name].partition("|")
            assert (value is None and nullable) or {
                "int": lambda v: type(v) is int, "number": lambda v: type(v) in (int, float),
                "bool": lambda v: type(v) is bool, "text": lambda v: type(v) is str}[wanted](value), (name, value)


def target_recipe_dict(world: World, data: st.DataObject) -> None:
    base = _RECIPES[data.draw(st.sampled_from(sorted(_RECIPES)), label="base")]
    raw = apply_edits(base, data.draw(_edits(_RECIPE_PATHS, _RECIPE_VALUES), label="edits"))
    try:
        recipe = Recipe.from_dict(raw, source="fuzz.toml")
    except RecipeError as err:
        assert str(err).startswith("fuzz.toml: ")
        return
    _check_recipe(recipe)


def target_recipe_toml(world: World, data: st.DataObject) -> None:
    path = world.root / "fuzz-recipe.toml"
    text = data.draw(_toml_texts(_RECIPE_TEXTS, _SETTING_NAMES + ["name", "export_bits"]), label="toml")
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        recipe = load_recipe(path)
    except RecipeError as err:
        assert str(path) in str(err)
        return
    _check_recipe(recipe)


# -- the manifest, through the runtime's bundle reading -----------------------------------------
def _load_scratch(world: World) -> EdgeModel | None:
    try:
        return EdgeModel.load(world.scratch)
    except BundleError as err:
        assert str(world.scratch) in str(err)
        return None


def target_manifest_json(world: World, data: st.DataObject) -> None:
    raw = data.draw(st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60),
                              st.sampled_from([b"[" * 100_000, b'{"format": "kgedge-bundle", "format_version": ' + b"1" * 5000 + b"}"])),
                    label="manifest")
    (world.scratch / "manifest.json").write_bytes(raw)
    assert _load_scratch(world) is None


_MANIFEST_PATHS = ([(key,) for key in ("format", "format_version", "kgedge_version", "model", "num_entities",
                                       "num_relations", "types", "profile", "session", "graph", "files", "sizes",
                                       "validation", MANIFEST_DIGEST, "colour")]
                   + [("session", key) for key in ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level")]
                   + [("files", name, key) for name in ("model.onnx", "entities.txt", "known_tails.npy") for key in ("sha256", "bytes")]
                   + [("files", name) for name in ("../escape.txt", "/etc/passwd", "manifest.json", "seen_overlay.tsv", "x")]
                   + [("sizes", "bundle_bytes"), ("types", 0), ("types", 3)])
_MANIFEST_VALUES = st.one_of(JSON_VALUES, st.sampled_from(
    [1, "1", 1.5, 2, 26, 25, ["user"], ["user", "user", "product", "intent"], "kgedge-bundle", "0" * 64,
     {"sha256": "0" * 64, "bytes": 1}, 0, -1, "all", "disable", 3, 1025]))


def target_manifest_mutation(world: World, data: st.DataObject) -> None:
    manifest = apply_edits(world.manifest, data.draw(_edits(_MANIFEST_PATHS, _MANIFEST_VALUES), label="edits"))
    (world.scratch / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    model = _load_scratch(world)
    if model is not None:  # a harmless edit (a version string, thread counts): same answers
        heads = np.arange(model.num_entities)
        ids, scores = model.topk(heads, heads % (2 * model.num_relations), 5)
        want_ids, want_scores = world.model.topk(heads, heads % (2 * model.num_relations), 5)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        assert (ids == want_ids).mean() > 0.9  # near-ties may swap under another optimisation level


# -- the query API ----------------------------------------------------------------------------
_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64", "bool", "U3", "object"]


def _as_array(values: list[int], dtype: str) -> np.ndarray:
    """``values`` as an array of ``dtype``; integers wrap around as a C cast would."""
    if np.dtype(dtype).kind in "iu":
        return np.array([v % 2**64 for v in values], dtype=np.uint64).astype(dtype)
    return np.array(values, dtype=object).astype(dtype)


def _id_values(high: int) -> st.SearchStrategy[Any]:
    ints = st.lists(st.one_of(st.integers(-2, high + 2), _INTS), min_size=0, max_size=6)
    arrays = st.tuples(ints, st.sampled_from(_DTYPES)).map(lambda t: _as_array(*t))
    return st.one_of(ints, arrays, _INTS, st.none(), _TEXT, st.floats(),
                     st.lists(st.one_of(_INTS, st.lists(_INTS, max_size=2)), max_size=3),  # ragged
                     arrays.map(lambda a: a.reshape(1, -1)), st.lists(st.floats(), max_size=3))


def _names(known: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(known), _TEXT, st.sampled_from([k + "\x00" for k in known[:3]]),
                     _INTS, st.none(), st.binary(max_size=4), st.lists(st.sampled_from(known), max_size=2))


_K = st.one_of(st.integers(-2, 30), _INTS, st.floats(), st.booleans(), st.none(), _TEXT,
               st.integers(-2, 30).map(np.int64), st.integers(0, 30).map(np.uint8), st.just(np.float32(3)))


def _check_ranked(model: EdgeModel, ranked: Any, k: int) -> None:
    assert isinstance(ranked, list) and len(ranked) <= k
    scores = [s for _, s in ranked]
    assert all(name in model.entities for name, _ in ranked) and all(np.isfinite(scores))
    assert scores == sorted(scores, reverse=True)


@functools.cache
def _query_strategies(entities: tuple[str, ...], relations: tuple[str, ...], types: tuple[str, ...]) -> dict[str, Any]:
    """The query target's strategies, built once (building them per case costs more than running it)."""
    n, r = len(entities), len(relations)
    return {
        "entity": _names(list(entities)), "relation": _names(list(relations)),
        "heads": _id_values(n), "relations": _id_values(r),
        "types": st.one_of(st.none(), st.sampled_from(types), st.lists(st.sampled_from([*types, "nope", ""]), max_size=4),
                           _INTS, _TEXT, st.lists(_INTS, max_size=2)),
        "exclude": st.one_of(st.none(), st.lists(st.lists(st.integers(-2, n + 1), max_size=4), max_size=4), _id_values(n),
                             _INTS, st.lists(st.lists(st.one_of(_INTS, st.lists(_INTS, max_size=2)), max_size=3), max_size=2)),
        "items": st.one_of(st.lists(st.tuples(_names(list(entities)), _names(list(relations))), max_size=3),
                           _id_values(n), _names(list(entities))),
    }


def target_query_api(world: World, data: st.DataObject) -> None:
    model = world.model
    n, r = model.num_entities, 2 * model.num_relations
    s = _query_strategies(tuple(model.entities), tuple(model.relation_name(i) for i in range(r)), tuple(model.types))
    call = data.draw(st.sampled_from(["answer", "recommend", "topk", "score_all", "answer_batch", "recommend_batch",
                                      "entity_name", "relation_id"]), label="call")
    k = data.draw(_K, label="k")
    try:
        if call == "answer":
            got = model.answer(data.draw(s["entity"], label="head"), data.draw(s["relation"], label="relation"), k,
                               types=data.draw(s["types"], label="types"), exclude_seen=data.draw(st.booleans()))
            _check_ranked(model, got, k)
        elif call == "recommend":
            got = model.recommend(data.draw(s["entity"], label="user"), k, exclude_seen=data.draw(st.booleans()),
                                  types=data.draw(s["types"], label="types"),
                                  relation=data.draw(s["relation"], label="relation"))
            _check_ranked(model, got, k)
        elif call in ("answer_batch", "recommend_batch"):
            items = data.draw(s["items"], label="items")
            got = getattr(model, call)(items, k, types=data.draw(s["types"], label="types"))
            assert len(got) == (1 if isinstance(items, str) else len(items))
            for ranked in got:
                _check_ranked(model, ranked, k)
        elif call in ("topk", "score_all"):
            heads, relations = data.draw(s["heads"], label="heads"), data.draw(s["relations"], label="relations")
            if call == "score_all":
                scores = model.score_all(heads, relations)
                assert scores.shape == (len(np.asarray(heads)), n) and scores.dtype == np.float32
                return
            ids, scores = model.topk(heads, relations, k, types=data.draw(s["types"], label="types"),
                                     exclude=data.draw(s["exclude"], label="exclude"), exclude_seen=data.draw(st.booleans()))
            assert ids.shape == scores.shape == (len(np.asarray(heads)), k) and ids.dtype == np.int64
            assert ids.min() >= -1 and ids.max() < n and np.all((ids == -1) == (scores == -np.inf))
            assert np.all(np.diff((ids == -1).astype(int), axis=1) >= 0)  # padding only at the end of a row
        elif call == "entity_name":
            assert model.entity_name(data.draw(s["heads"], label="id")) in model.entities
        else:
            assert 0 <= model.relation_id(data.draw(s["relation"], label="relation")) < r
    except QueryError:
        pass  # UnknownNameError included: the one documented error of a query


# -- kgedge serve -------------------------------------------------------------------------------
_REQUEST_PATHS = [("head",), ("relation",), ("user",), ("k",), ("types",), ("exclude_seen",), ("queries",), ("colour",)]


def post(world: World, path: str, body: bytes, method: str = "POST") -> tuple[int, Any]:
    conn = http.client.HTTPConnection(*world.server.server_address[:2], timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def target_serve_request(world: World, data: st.DataObject) -> None:
    good = data.draw(st.sampled_from([{"head": "user_1", "relation": "bought", "k": 3}, {"user": "user_2"},
                                      {"queries": [{"head": "intent_0", "relation": "answers"}, {"user": "user_0"}]}]))
    body = data.draw(st.one_of(
        _edits(_REQUEST_PATHS, st.one_of(JSON_VALUES, st.sampled_from(["user_1", "bought", "product", 0, 21, 1000, [],
                                                                       [{"user": "user_1"}] * 9]))).map(
            lambda edits: json.dumps(apply_edits(good, edits)).encode()),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60),
        st.sampled_from([b"[" * 4000, b"{" * 4000, b'{"k": ' + b"9" * 4000 + b"}", b"x" * 5000, b"", b"\xff", b"NaN"]),
    ), label="body")
    path = data.draw(st.sampled_from(["/query", "/recommend", "/nope", "/query?x=1", "//query", "/health"]), label="path")
    status, payload = post(world, path, body, data.draw(st.sampled_from(["POST", "GET"]), label="method"))
    assert status in (200, 400, 404, 413, 422), (status, payload)
    assert ("error" in payload) == (status != 200)


TARGETS: dict[str, Callable[[World, st.DataObject], None]] = {
    "kg_directory": target_kg_directory, "profile_dict": target_profile_dict, "profile_toml": target_profile_toml,
    "recipe_dict": target_recipe_dict, "recipe_toml": target_recipe_toml, "manifest_json": target_manifest_json,
    "manifest_mutation": target_manifest_mutation, "query_api": target_query_api, "serve_request": target_serve_request,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    made = open_world(tmp_path_factory.mktemp("fuzz"))
    yield made
    close_world(made)


@pytest.mark.parametrize("name", sorted(DEFAULT_EXAMPLES))
def test_fuzz_target_raises_only_documented_errors(world: World, name: str) -> None:
    ran = run_target(world, name, DEFAULT_EXAMPLES[name])
    assert ran >= min(100, DEFAULT_EXAMPLES[name])  # hypothesis may stop early only on a tiny input space
    if name.startswith("serve"):
        assert post(world, "/health", b"", "GET")[0] == 200  # still serving


# -- regressions: each of these escaped as a raw numpy / Python error before ----------------------
@pytest.mark.parametrize("call", [
    lambda m: m.topk([[0], [0, 1]], [0, 0], 3),  # ragged ids: numpy's "inhomogeneous shape"
    lambda m: m.topk([0], [0], 3, exclude=5),  # not iterable
    lambda m: m.topk([0], [0], 3, exclude=[[1, [2]]]),  # a ragged row
    lambda m: m.answer("user_1", "bought", types=5),
    lambda m: m.recommend_batch(5),
    lambda m: m.answer_batch(5),
    lambda m: m.answer_batch([5]),
    lambda m: m.entity_name(np.array([1, 2])),  # int() of an array
])
def test_malformed_query_arguments_raise_query_error(world: World, call: Callable[[EdgeModel], Any]) -> None:
    with pytest.raises(QueryError):
        call(world.model)


@pytest.mark.parametrize("text", ["name = 'x'\nopset = " + "1" * 5000, "name = 'x'\na = " + "[" * 3000 + "]" * 3000],
                         ids=["int-of-5000-digits", "3000-nested-arrays"])
def test_profile_and_recipe_files_too_large_to_parse_are_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(path)
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(path)


@pytest.mark.parametrize(("setting", "message"), [
    ({"kind": "distill", "epochs": "x"}, "step 1 (distill) epochs='x' must be an integer"),
    ({"kind": "qat", "bits": 8.0}, "step 1 (qat) bits=8.0 must be an integer"),
    ({"kind": "distill", "adaptive": 1}, "step 1 (distill) adaptive=1 must be true or false"),
    ({"kind": "prune_magnitude", "threshold": "0.1"}, "threshold='0.1' must be a number (or left out)"),
    ({"kind": "distill", "student": 3}, "student=3 must be a string"),
])
def test_recipe_setting_values_are_type_checked_when_read(setting: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=re.escape(message)):
        Recipe.from_dict({"steps": [setting]})


def test_a_recipe_step_kind_that_is_a_list_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match=r"step 1 kind=\[1\]; allowed: distill"):
        Recipe.from_dict({"steps": [{"kind": [1]}]})


# -- corrupted bundles: every file of a real exported bundle ----------------------------------------
def export_small_bundle(out: Path) -> Path:
    """Export a 16-entity DistMult model with the ``portable`` profile: about 9 KB in 8 files."""
    import torch

    from kgedge.data.kg import KnowledgeGraph
    from kgedge.export import export_bundle
    from kgedge.models import ModelConfig, build
    from kgedge.train.checkpoint import Checkpoint, Vocabulary

    rng = np.random.default_rng(0)
    n, r = 16, 2
    triples = np.unique(np.stack([rng.integers(0, n, 60), rng.integers(0, r, 60), rng.integers(0, n, 60)], 1), axis=0)
    kg = KnowledgeGraph(name="tiny", entities=[f"e{i:02d}" for i in range(n)], relations=[f"r{i}" for i in range(r)],
                        train=triples[:40], valid=triples[40:46], test=triples[46:],
                        entity_types=(np.arange(n) % 2).astype(np.int64), type_names=["a", "b"])
    torch.manual_seed(0)
    model = build(ModelConfig(model="distmult", num_entities=n, num_relations=2 * r, dim=4, init_scale=0.5)).eval()
    export_bundle(Checkpoint(model=model, vocab=Vocabulary.of(kg), metadata={"data": "tiny"}), "portable", out, kg=kg)
    return out


@dataclass
class Sweep:
    """What a damage sweep saw.

    Attributes:
        tried: damaged copies loaded.
        refused: refused with a ``BundleError`` naming the damaged file.
        harmless: loaded with exactly the original content (JSON whitespace, or the name of the
            manifest's own digest key: nothing that the runtime uses changed).
        failures: anything else, described.
    """

    tried: int = 0
    refused: int = 0
    harmless: int = 0
    failures: list[str] | None = None


def damage_sweep(bundle: Path, work: Path, kind: str, stride: int = 1, masks: tuple[int, ...] = (0xFF, 0x01)) -> Sweep:
    """Flip bytes (XOR each mask) or truncate every ``stride``-th position of every file, loading each copy.

    Args:
        kind: ``"flip"`` or ``"truncate"``.
        stride: 1 is exhaustive; with a larger stride the masks take turns.
    """
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(bundle, work)
    original = read_bundle(work)
    plain = {k: v for k, v in original.manifest.items() if k != MANIFEST_DIGEST}
    sweep = Sweep(failures=[])
    for path in sorted(work.iterdir()):
        good = path.read_bytes()
        for step, position in enumerate(range(0, len(good), stride)):
            damaged: list[bytes] = []
            if kind == "truncate":
                damaged.append(good[:position])
            else:
                for mask in masks if stride == 1 else masks[step % len(masks):][:1]:
                    flipped = bytearray(good)
                    flipped[position] ^= mask
                    damaged.append(bytes(flipped))
            for data in damaged:
                path.write_bytes(data)
                sweep.tried += 1
                try:
                    loaded = read_bundle(work)
                except BundleError as err:
                    if path.name in str(err):
                        sweep.refused += 1
                    else:
                        sweep.failures.append(f"{path.name}@{position}: error does not name the file: {err}")
                    continue
                except Exception as err:  # noqa: BLE001 (the point: nothing else may come out)
                    sweep.failures.append(f"{path.name}@{position}: {type(err).__name__}: {err}")
                    continue
                kept = {k: v for k, v in loaded.manifest.items() if k in original.manifest and k != MANIFEST_DIGEST}
                renamed_digest = MANIFEST_DIGEST not in loaded.manifest and len(loaded.manifest) == len(original.manifest)
                if loaded.manifest == original.manifest or (kept == plain and renamed_digest):
                    sweep.harmless += 1
                else:
                    sweep.failures.append(f"{path.name}@{position}: loaded with other content")
        path.write_bytes(good)
    return sweep


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_small_bundle(tmp_path_factory.mktemp("real") / "bundle")


# a stride of ~60 flips and ~25 truncations per file in the default suite; every byte in the slow one
@pytest.mark.parametrize(("kind", "stride"), [("flip", 61), ("truncate", 151),
                                              pytest.param("flip", 1, marks=pytest.mark.slow),
                                              pytest.param("truncate", 1, marks=pytest.mark.slow)])
def test_every_damaged_file_is_refused_naming_the_file(real_bundle: Path, tmp_path: Path, kind: str, stride: int) -> None:
    sweep = damage_sweep(real_bundle, tmp_path / "work", kind, stride)
    assert sweep.failures == []
    assert sweep.tried == sweep.refused + sweep.harmless and sweep.harmless <= sweep.tried // 50


def test_exported_manifests_carry_their_digest_and_an_edit_is_refused(real_bundle: Path, tmp_path: Path) -> None:
    from kgedge.runtime.bundle import manifest_digest

    manifest = json.loads((real_bundle / "manifest.json").read_text())
    assert manifest[MANIFEST_DIGEST] == manifest_digest(manifest)
    bundle = shutil.copytree(real_bundle, tmp_path / "b")
    edit_manifest(bundle, lambda m: m.__setitem__("types", ["a", "c"]))  # a silent rename without the digest
    with pytest.raises(BundleError, match=r"manifest\.json: manifest_sha256 does not match"):
        EdgeModel.load(bundle)


@pytest.mark.parametrize("text", ['{"format": "kgedge-bundle", "format_version": ' + "1" * 5000 + "}", "[" * 100_000],
                         ids=["int-of-5000-digits", "nested-100000-deep"])
def test_a_manifest_too_long_or_deep_to_parse_is_a_bundle_error(fresh: TinyBundle, text: str) -> None:  # noqa: F811
    (fresh.path / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=r"manifest\.json: not valid UTF-8 JSON"):
        EdgeModel.load(fresh.path)


def _grow(manifest: dict[str, Any], name: str) -> None:
    """A consistent lie: one file one byte larger, and the total with it."""
    manifest["files"][name]["bytes"] += 1
    manifest["sizes"]["bundle_bytes"] += 1


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: _grow(m, "entities.txt"), r"entities\.txt: 251 bytes, the manifest says 252"),
    (lambda m: m["sizes"].__setitem__("bundle_bytes", m["sizes"]["bundle_bytes"] - 1), r"sizes\.bundle_bytes=\d+ but"),
    (lambda m: m.__setitem__("format_version", "1"), "format_version '1' is not supported"),
    (lambda m: m.__setitem__("format_version", True), "format_version True is not supported"),
    (lambda m: m.__setitem__("format_version", 0), "format_version 0 is not supported"),
    (lambda m: m.__setitem__("model", "distmult"), "'model' must be an object"),
    (lambda m: m["session"].__setitem__("graph_optimization_level", ["all"]), "graph_optimization_level=\\['all'\\]"),
], ids=["file-bytes", "bundle-bytes", "version-str", "version-bool", "version-0", "model-str", "level-list"])
def test_a_manifest_that_lies_is_refused(fresh: TinyBundle, change: Callable[[dict], None], message: str) -> None:  # noqa: F811
    edit_manifest(fresh.path, change)
    with pytest.raises(BundleError, match=message):
        EdgeModel.load(fresh.path)


@pytest.mark.parametrize("name", ["..\\evil.txt", "a\x00b", ".", "manifest.json"])
def test_more_file_names_that_are_not_plain_names_are_refused(fresh: TinyBundle, name: str) -> None:  # noqa: F811
    edit_manifest(fresh.path, lambda m: m["files"].__setitem__(name, {"sha256": "0" * 64, "bytes": 1}))
    with pytest.raises(BundleError, match="is not a plain file name inside the bundle"):
        EdgeModel.load(fresh.path)


def test_a_symlinked_manifest_or_overlay_and_a_fifo_are_refused(fresh: TinyBundle, tmp_path: Path) -> None:  # noqa: F811
    outside = tmp_path / "overlay.tsv"
    outside.write_text("user_0\tbought\tproduct_1\n")
    (fresh.path / "seen_overlay.tsv").symlink_to(outside)
    with pytest.raises(BundleError, match=r"seen_overlay\.tsv: a symlink"):
        EdgeModel.load(fresh.path)
    (fresh.path / "seen_overlay.tsv").unlink()
    os.replace(fresh.path / "manifest.json", tmp_path / "manifest.json")
    (fresh.path / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(BundleError, match=r"manifest\.json: missing \(or not a plain file\)"):
        EdgeModel.load(fresh.path)
    (fresh.path / "manifest.json").unlink()
    os.replace(tmp_path / "manifest.json", fresh.path / "manifest.json")
    (fresh.path / "entities.txt").unlink()
    os.mkfifo(fresh.path / "entities.txt")  # reading it would block forever
    outcome: list[BaseException] = []
    loader = threading.Thread(target=lambda: outcome.append(pytest.raises(BundleError, EdgeModel.load, fresh.path).value),
                              daemon=True)
    loader.start()
    loader.join(timeout=20)
    assert not loader.is_alive() and "not a regular file" in str(outcome[0])


def test_a_file_far_larger_than_the_manifest_says_is_not_read(fresh: TinyBundle) -> None:  # noqa: F811
    with open(fresh.path / "model.onnx", "r+b") as handle:
        handle.truncate(8 << 30)  # sparse: 8 GiB that take no disk; reading them would exhaust memory
    with pytest.raises(BundleError, match=r"model\.onnx: 8,589,934,592 bytes, the manifest says"):
        EdgeModel.load(fresh.path)


def test_an_npz_posing_as_npy_is_refused(fresh: TinyBundle) -> None:  # noqa: F811
    with open(fresh.path / "entity_types.npy", "wb") as handle:
        np.savez(handle, types=np.zeros(26, dtype=np.int32))
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match=r"entity_types\.npy: an \.npz archive"):
        EdgeModel.load(fresh.path)


def test_a_graph_reading_external_data_from_outside_the_bundle_is_refused(
    fresh: TinyBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """onnxruntime resolves a graph's external data against the working directory, outside the checksums."""
    import onnx
    from onnx import TensorProto

    table = fresh.path / "model.onnx"
    graph = onnx.load(table)
    init = next(i for i in graph.graph.initializer if i.name == "E")
    (tmp_path / "secret.bin").write_bytes(np.full(init.dims, 7, np.float32).tobytes())
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", str(4 * int(np.prod(init.dims))))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    table.write_bytes(graph.SerializeToString())
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    monkeypatch.chdir(tmp_path)  # where secret.bin lies
    with pytest.raises(BundleError, match="onnxruntime cannot load the graph"):
        EdgeModel.load(fresh.path)


# -- nothing that is loaded can run code ------------------------------------------------------------
@functools.cache
def _package_nodes() -> tuple[tuple[str, ast.AST], ...]:
    """Every AST node of the package's source, with its file."""
    return tuple((str(path.relative_to(PACKAGE.parent)), node) for path in sorted(PACKAGE.rglob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def _dotted(node: ast.AST) -> str:
    """``np.load`` for the expression ``np.load``; ``""`` for anything that is not a dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _calls(name: str) -> list[tuple[str, ast.Call]]:
    """Every call of ``name`` (``"np.load"``, ``"eval"``) in the package, with its file and line."""
    return [(f"{where}:{node.lineno}", node) for where, node in _package_nodes()
            if isinstance(node, ast.Call) and _dotted(node.func) == name]


def _keyword(call: ast.Call, name: str) -> object:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else "<missing or not a constant>"


def test_np_load_never_unpickles_and_torch_load_is_weights_only() -> None:
    np_loads = _calls("np.load") + _calls("numpy.load")
    torch_loads = _calls("torch.load")
    assert np_loads and torch_loads  # the scan sees the calls it guards
    assert [where for where, call in np_loads if _keyword(call, "allow_pickle") is not False] == []
    assert [where for where, call in torch_loads if _keyword(call, "weights_only") is not True] == []


def test_the_package_never_evaluates_or_unpickles() -> None:
    for builtin in ("eval", "exec", "compile", "__import__", "pickle.load", "pickle.loads", "marshal.loads", "yaml.load"):
        assert _calls(builtin) == [], builtin
    imported = set()
    for _, node in _package_nodes():
        if isinstance(node, ast.Import):
            imported |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.partition(".")[0])
    assert not imported & {"pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
    extracts = [(w, c) for name in ("tar.extractall", "tar.extract") for w, c in _calls(name)]
    assert extracts and all(_keyword(call, "filter") == "data" for _, call in extracts)


# -- kgedge serve: what tests/test_serve.py does not send ---------------------------------------------
@pytest.mark.parametrize("body", [b"[" * 4000, b'{"head": "user_1", "relation": "bought", "k": ' + b"9" * 4400 + b"}"],
                         ids=["nested-4000-deep", "int-of-4400-digits"])
def test_json_too_deep_or_too_long_to_parse_is_a_400(tiny_server: EdgeServer, body: bytes) -> None:
    conn = http.client.HTTPConnection(*tiny_server.server_address[:2], timeout=10)
    conn.request("POST", "/query", body=body)
    response = conn.getresponse()
    status, payload = response.status, json.loads(response.read())
    conn.close()
    assert status == 400 and "not valid UTF-8 JSON" in payload["error"]


def _raw_exchange(world: World, request: bytes) -> bytes:
    with socket.create_connection(world.server.server_address[:2], timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


@pytest.mark.parametrize("length", ["-1", "12abc", "0x10", "\uff11\uff12", "1 2"])
def test_bad_content_length_is_a_400(world: World, length: str) -> None:
    reply = _raw_exchange(world, f"POST /query HTTP/1.0\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
    assert reply.startswith(b"HTTP/1.0 400") and b"bad Content-Length" in reply
    assert post(world, "/health", b"", "GET")[0] == 200


def test_a_stalled_body_gets_408_while_others_are_served(tiny_server: EdgeServer) -> None:
    address = tiny_server.server_address[:2]
    with socket.create_connection(address, timeout=10) as slow:
        slow.sendall(b'POST /query HTTP/1.0\r\nContent-Length: 100\r\n\r\n{"head": ')
        other = http.client.HTTPConnection(*address, timeout=10)
        other.request("GET", "/health")
        assert other.getresponse().status == 200  # served while the slow body is pending
        other.close()
        reply = b""
        while chunk := slow.recv(4096):  # until the server closes the connection
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 408") and b"did not arrive within 0.5 s" in reply


@pytest.fixture(scope="module")
def tiny_server(world: World) -> Iterator[EdgeServer]:
    """The default limits (64 KiB bodies) and a client timeout of 0.5 s."""
    server = EdgeServer(world.model, "127.0.0.1", 0, ServerLimits(timeout_s=0.5))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
