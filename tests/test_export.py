"""Export: graph structure, scores against torch, quantized agreement, bundle contents, profiles."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from kgedge.data.kg import KnowledgeGraph
from kgedge.export import ExportValidationError, export_bundle, resolve_profile
from kgedge.export import graph as export_graph
from kgedge.export.bundle import graph_spec
from kgedge.export.graph import build_graph
from kgedge.export.profile import ExportProfile, ProfileError, available_profiles
from kgedge.export.validate import onnx_scorer, session_for, topk_overlap
from kgedge.models import ModelConfig, build
from kgedge.train.checkpoint import Checkpoint, Vocabulary
from kgedge.train.scorer import model_scorer

KGE_MODELS = ("transe", "distmult", "complex", "rotate")
PROFILES = tuple(available_profiles())


def _tiny_kg(num_entities: int = 60, num_relations: int = 3, seed: int = 0) -> KnowledgeGraph:
    rng = np.random.default_rng(seed)
    triples = np.unique(np.stack([rng.integers(0, num_entities, 400), rng.integers(0, num_relations, 400),
                                  rng.integers(0, num_entities, 400)], 1), axis=0)
    rng.shuffle(triples)
    types = (np.arange(num_entities) * 3 // num_entities).astype(np.int64)  # three runs of types
    return KnowledgeGraph(
        name="tiny", entities=[f"e{i:03d}" for i in range(num_entities)],
        relations=[f"r{i}" for i in range(num_relations)], train=triples[:300], valid=triples[300:340],
        test=triples[340:], entity_types=types, type_names=["a", "b", "c"],
    )


def _checkpoint(name: str, kg: KnowledgeGraph, dim: int = 16, seed: int = 0) -> Checkpoint:
    """A random model; ``transe-l1`` is TransE with the L1 distance (``transe`` alone is L2)."""
    torch.manual_seed(seed)
    options = {"distance": "l1"} if name == "transe-l1" else {}
    config = ModelConfig(model=name.removesuffix("-l1"), num_entities=kg.num_entities,
                         num_relations=2 * kg.num_relations, dim=dim, init_scale=0.5, options=options)
    return Checkpoint(model=build(config).eval(), vocab=Vocabulary.of(kg), metadata={"data": "tiny"})


def _optimized(model: onnx.ModelProto, tmp_path: Path) -> onnx.ModelProto:
    """The graph as onnxruntime runs it, after the optimizations it applies when a session is created
    (constant folding among them)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3  # errors only: inputs with defaults and the saved optimized model warn
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


def _nodes(graph: onnx.GraphProto):
    """Every node of ``graph``, those of its If branches included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)


def _plain_run(model: onnx.ModelProto, heads, relations, k):
    """A run that restricts nothing: only the ids and k are fed, the other inputs keep their defaults."""
    return session_for(model).run(None, {"head": np.asarray(heads, np.int64), "relation": np.asarray(relations, np.int64),
                                         "k": np.array([k], np.int64)})


def _run(model: onnx.ModelProto, heads, relations, k, allowed, exclude):
    return session_for(model).run(None, {
        "head": np.asarray(heads, np.int64), "relation": np.asarray(relations, np.int64),
        "k": np.array([k], np.int64), "allowed_types": np.asarray(allowed, bool),
        "exclude": np.asarray(exclude, np.int64).reshape(len(heads), -1), "masked": np.array(True),
    })


@pytest.mark.parametrize("name", KGE_MODELS)
def test_fp32_graph_matches_torch_scores(name: str) -> None:
    kg = _tiny_kg()
    checkpoint = _checkpoint(name, kg)
    model = build_graph(graph_spec(checkpoint), resolve_profile("portable"))
    heads, relations = np.arange(10), np.arange(10) % (2 * kg.num_relations)
    onnx_scores = onnx_scorer(session_for(model), kg.num_entities, 3)(heads, relations)
    torch_scores = model_scorer(checkpoint.model)(heads, relations)
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["complex", "rotate"])
@pytest.mark.parametrize("profile", ["portable", "x86-avx2"])
def test_relation_only_nodes_are_folded_when_the_session_loads(name: str, profile: str, tmp_path: Path) -> None:
    """A complex query's relation-side work (halves, signs, RotatE's cos / sin) depends on constants only:
    onnxruntime folds it into tables when the session is created, so a query runs none of it."""
    import onnxruntime as ort

    kg = _tiny_kg()
    model = build_graph(graph_spec(_checkpoint(name, kg)), resolve_profile(profile))
    in_file = Counter(node.op_type for node in model.graph.node)
    assert in_file["Concat"] >= 2 and (name != "rotate" or in_file["Cos"] == in_file["Sin"] == 1)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    run = Counter(node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node)
    assert run["Cos"] == run["Sin"] == run["Slice"] == 0
    assert run["Neg"] == in_file["Neg"] - 1  # the sign of the imaginary half (RotatE's reported -distance stays)
    assert run["Concat"] == 0  # no padding (60 entities): the query has no Concat left either


@pytest.mark.parametrize("name", KGE_MODELS)
@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "portable"])
def test_quantized_graph_uses_integer_matmul_and_agrees(name: str, profile: str) -> None:
    kg = _tiny_kg()
    checkpoint = _checkpoint(name, kg)
    spec = graph_spec(checkpoint)
    chosen = resolve_profile(profile)
    model = build_graph(spec, chosen)
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["MatMulInteger"] == 1 and ops["MatMul"] == 0
    if chosen.table_bits == 4:  # packed two codes per byte
        codes = next(i for i in model.graph.initializer if i.name == "entity_codes_int4_t")
        assert codes.data_type == onnx.TensorProto.UINT8 and codes.dims[0] == (spec.entity_table.shape[1] + 1) // 2
    else:
        codes = next(i for i in model.graph.initializer if i.name == "entity_codes_t")
        expected = onnx.TensorProto.UINT8 if chosen.weight_type == "uint8" else onnx.TensorProto.INT8
        assert codes.data_type == expected
    # integer emulation (what the target computes) against the fp32 graph
    emulated = onnx_scorer(session_for(build_graph(spec, chosen, emulate=True)), kg.num_entities, 3)
    fp32 = onnx_scorer(session_for(build_graph(spec, resolve_profile("portable"))), kg.num_entities, 3)
    heads, relations = np.arange(40), np.arange(40) % 6
    minimum = 0.6 if chosen.table_bits == 4 else 0.9  # random tables, no QAT: 4 bits lose more
    assert topk_overlap(fp32(heads, relations), emulated(heads, relations), 10) >= minimum


@pytest.mark.parametrize("profile", PROFILES)
def test_an_l1_graph_scores_the_l1_distance_to_the_stored_table(profile: str) -> None:
    """TransE-L1 has no product: a float profile's graph scores ``-Σ|q - t|`` in float against the table as
    stored, as torch does with that table; an integer profile's graph scores it exactly on its one uint8
    grid (``low + step · code``), query and table rounded to it, the query saturating at its edges."""
    kg = _tiny_kg()
    checkpoint = _checkpoint("transe-l1", kg)
    spec = graph_spec(checkpoint)
    chosen = resolve_profile(profile)
    model = build_graph(spec, chosen)
    ops = Counter(node.op_type for node in model.graph.node)
    integer = chosen.format == "qoperator"
    if integer:
        assert ops["MatMulInteger"] == 1 and ops["Min"] == 1 and ops["Abs"] == 0 and ops["MatMul"] == 0
    else:
        assert ops["MatMulInteger"] == 0 and ops["Abs"] == 1 and ops["MatMul"] == 1  # the sum over W: a row of ones
    stored = build(checkpoint.model.config).eval()
    entity, relation = export_graph.stored_tables(spec, chosen)
    with torch.no_grad():
        stored.entity.weight.copy_(torch.from_numpy(entity))
        stored.relation.weight.copy_(torch.from_numpy(relation))
    heads, relations = np.arange(40), np.arange(40) % 6
    onnx_scores = onnx_scorer(session_for(model), kg.num_entities, 3)(heads, relations)
    float_scores = model_scorer(stored)(heads, relations)
    if integer:
        low, step = export_graph.l1_grid(spec, chosen)
        low, step = np.float32(low), np.float32(step)

        def grid(x: np.ndarray) -> np.ndarray:  # QuantizeLinear: round half to even, saturate
            return np.clip(np.round((x.astype(np.float32) - low) / step), 0, 255)

        q = entity[heads] + relation[relations]
        assert (grid(q) == 0).any() or (grid(q) == 255).any()  # some query coordinate lies beyond the table
        distance = np.abs(grid(q)[:, None, :] - grid(entity)[None]).sum(-1)
        np.testing.assert_allclose(onnx_scores, -step * distance, rtol=1e-5, atol=1e-4)
        assert topk_overlap(float_scores, onnx_scores, 10) >= 0.9
    else:
        np.testing.assert_allclose(onnx_scores, float_scores, rtol=1e-5, atol=1e-4)
    if chosen.quantized:  # and the stored table is the quantized one, not the float original
        assert not np.allclose(entity, spec.entity_table, atol=1e-6)


def test_an_l1_bundle_is_stored_in_integers_and_scored_from_a_table_folded_once(tmp_path: Path) -> None:
    """The file keeps the int8 codes with their per-row scales; the session folds them into one uint8 grid
    table and its row sums: a query runs only the Min against that table and the integer sums."""
    model = build_graph(graph_spec(_checkpoint("transe-l1", _tiny_kg())), resolve_profile("x86-avx2"))
    codes = next(i for i in model.graph.initializer if i.name == "entity_codes_t")
    assert codes.data_type == onnx.TensorProto.UINT8
    optimized = _optimized(model, tmp_path)
    folded = {init.name: init for init in optimized.graph.initializer}
    smaller = next(node for node in optimized.graph.node if node.op_type == "Min")
    table = next(folded[name] for name in smaller.input if name in folded)  # min(q, table): the table is constant
    assert table.data_type == onnx.TensorProto.UINT8 and tuple(table.dims) == (16, 60)  # [W, N]
    ops = Counter(node.op_type for node in optimized.graph.node)
    assert ops["QuantizeLinear"] == 1 and ops["ReduceSum"] == 1 and ops["DequantizeLinear"] == 1  # the query's
    # grid codes and their sum; the head row's codes


@pytest.mark.parametrize("width", [15, 16])
def test_int4_packing_round_trips_through_the_graph(width: int) -> None:
    from kgedge.export.graph import pack_int4
    from kgedge.quantization import dequantize_rows, quantize_rows

    rng = np.random.default_rng(width)
    table = rng.normal(size=(50, width)).astype(np.float32)
    codes, _ = quantize_rows(table, 4)
    packed = pack_int4(codes.T)
    assert packed.shape == ((width + 1) // 2, 50) and packed.dtype == np.uint8
    kg = _tiny_kg(num_entities=50)
    spec = replace(graph_spec(_checkpoint("distmult", kg, dim=width)), entity_table=table,
                   relation_table=np.ones((6, width), np.float32))  # DistMult with r = 1: scores = h · t
    native = onnx_scorer(session_for(build_graph(spec, resolve_profile("int4"))), 50, 3)
    rows = dequantize_rows(*quantize_rows(table, 4))
    heads = np.arange(20)
    reference = rows[heads] @ rows.T
    # only the query's own 8-bit quantization separates the graph from the unpacked 4-bit table
    assert np.abs(native(heads, np.zeros(20, np.int64)) - reference).max() <= 0.02 * np.abs(reference).max()


def test_avx2_profile_runs_natively_without_saturation() -> None:
    kg = _tiny_kg(num_entities=500)
    checkpoint = _checkpoint("distmult", kg, dim=64)
    spec = graph_spec(checkpoint)
    profile = resolve_profile("x86-avx2")
    native = onnx_scorer(session_for(build_graph(spec, profile)), kg.num_entities, 3)
    exact = onnx_scorer(session_for(build_graph(spec, profile, emulate=True)), kg.num_entities, 3)
    heads, relations = np.arange(50), np.arange(50) % 6
    np.testing.assert_allclose(native(heads, relations), exact(heads, relations), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["distmult", "transe", "transe-l1"])
def test_type_restriction_and_exclusion_give_exact_topk(name: str) -> None:
    kg = _tiny_kg()
    checkpoint = _checkpoint(name, kg)
    model = build_graph(graph_spec(checkpoint), resolve_profile("portable"))
    full = model_scorer(checkpoint.model)(np.array([1, 2]), np.array([0, 1]))
    allowed = np.array([True, False, True])
    exclude = np.array([[3, 5, -1], [7, -1, -1]])
    k = 12
    ids, scores = _run(model, [1, 2], [0, 1], k, allowed, exclude)
    for row in range(2):
        candidates = np.flatnonzero(allowed[kg.entity_types])
        candidates = np.setdiff1d(candidates, exclude[row][exclude[row] >= 0])
        best = candidates[np.argsort(-full[row, candidates], kind="stable")[:k]]
        assert len(ids[row]) == k and np.isfinite(scores[row]).all()
        assert set(ids[row].tolist()) == set(best.tolist())
        assert not set(ids[row].tolist()) & set(exclude[row].tolist())
        assert np.all(np.diff(scores[row]) <= 1e-6)


def test_k_larger_than_candidates_marks_the_rest_minus_inf() -> None:
    kg = _tiny_kg()
    model = build_graph(graph_spec(_checkpoint("distmult", kg)), resolve_profile("portable"))
    allowed = np.array([False, True, False])  # 20 entities of type b
    ids, scores = _run(model, [0], [0], 30, allowed, np.zeros((1, 0)))
    assert np.isfinite(scores[0]).sum() == 20
    assert set(ids[0][np.isfinite(scores[0])].tolist()) == set(np.flatnonzero(kg.entity_types == 1).tolist())


def _blocked(monkeypatch: pytest.MonkeyPatch, spec, profile: ExportProfile) -> onnx.ModelProto:  # noqa: ANN001
    """The graph of ``spec`` with the two-step (blocked) top-k forced on, whatever the entity count."""
    with monkeypatch.context() as patch:
        patch.setattr(export_graph, "BLOCKED_TOPK_MIN_ENTITIES", 0)
        return build_graph(spec, profile)


@pytest.mark.parametrize(("name", "profile"), [("distmult", "x86-avx2"), ("transe", "x86-avx2"), ("transe", "portable"),
                                             ("complex", "int4"), ("transe-l1", "x86-avx2")])
def test_blocked_topk_equals_one_topk(monkeypatch: pytest.MonkeyPatch, name: str, profile: str) -> None:
    kg = _tiny_kg(num_entities=60)  # blocks of 8: 64 rows, 4 of them padding
    spec = graph_spec(_checkpoint(name, kg))
    chosen = resolve_profile(profile)
    plain, blocked = build_graph(spec, chosen), _blocked(monkeypatch, spec, chosen)
    ops = Counter(node.op_type for node in _nodes(blocked.graph))
    # one top k per branch (plain; masked with every type allowed or not): two TopK each when blocked
    assert ops["ReduceMax"] >= 1 and ops["TopK"] == 6 and Counter(n.op_type for n in _nodes(plain.graph))["TopK"] == 3
    heads, relations = np.arange(12), np.arange(12) % 6
    exclude = np.where(np.arange(12 * 5).reshape(12, 5) % 3 == 0, -1, (np.arange(60) * 7 % 60)[:60].reshape(12, 5))
    for k in (1, 3, 10, 59):  # k beyond the 8 blocks takes every block
        for allowed in ([True, True, True], [False, True, True]):
            want = _run(plain, heads, relations, k, allowed, exclude)
            got = _run(blocked, heads, relations, k, allowed, exclude)
            np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
            finite = np.isfinite(want[1])
            for row in range(12):  # same entities (ties may come in another order)
                assert set(got[0][row][finite[row]].tolist()) == set(want[0][row][finite[row]].tolist())


def _block_scaled_reference(spec, profile: ExportProfile, heads: np.ndarray,  # noqa: ANN001
                            relations: np.ndarray) -> np.ndarray:
    """DistMult's scores as a block-scaled graph computes them, in float64: the dequantized block-scaled
    tables, the query quantized per row to 8 bits like the graph does (from the head's codes, its block
    scale applied to the query's scale afterwards)."""
    from kgedge.quantization import quantize_row_blocks

    entity, relation = export_graph.stored_tables(spec, profile)
    block = export_graph.topk_block(len(spec.entity_types))
    padded = export_graph._padded(spec, block, in_scale_order=True)
    order = export_graph.scale_order(padded, len(spec.entity_types))
    codes, block_scales = quantize_row_blocks(padded.entity_table[order], profile.table_bits, block)
    position = np.argsort(order)[heads]  # entity id -> stored row
    q = codes[position].astype(np.float32) * relation[relations]  # float32 like the graph: ties break alike
    peak = np.maximum(np.abs(q).max(axis=1, keepdims=True), np.float32(1e-12))
    q_codes = np.clip(np.round(q * (np.float32(127.0) / peak)), -127, 127)
    head_scale = (block_scales[position // block] / np.float32(127.0))[:, None]
    return (peak * head_scale).astype(np.float64) * q_codes @ entity.T.astype(np.float64)


@pytest.mark.parametrize(("profile", "emulate"), [("x86-avx2", False), ("x86-avx2", True), ("arm64", True),
                                                  ("int4", False)])
def test_block_scaled_graph_ranks_the_block_quantized_scores(monkeypatch: pytest.MonkeyPatch, profile: str,
                                                            emulate: bool) -> None:
    kg = _tiny_kg(num_entities=60)  # blocks of 8: 64 rows, 4 of them padding; three type runs
    spec = graph_spec(_checkpoint("distmult", kg))
    chosen = resolve_profile(profile)
    with monkeypatch.context() as patch:
        patch.setattr(export_graph, "BLOCKED_TOPK_MIN_ENTITIES", 0)
        patch.setattr(export_graph, "BLOCK_SCALES_MIN_ENTITIES", 0)
        assert export_graph.block_scaled(spec, chosen)
        model = build_graph(spec, chosen, emulate=emulate)
        reference = _block_scaled_reference(spec, chosen, np.arange(12), np.arange(12) % 6)
    initializers = {init.name for init in model.graph.initializer}
    assert "entity_block_scales" in initializers and "entity_scales" not in initializers
    heads, relations = np.arange(12), np.arange(12) % 6
    exclude = np.where(np.arange(12 * 5).reshape(12, 5) % 3 == 0, -1, (np.arange(60) * 7 % 60)[:60].reshape(12, 5))
    for k in (1, 3, 10, 60):
        for allowed in ([True, True, True], [False, True, True], [True, False, False]):
            ids, scores = _run(model, heads, relations, k, allowed, exclude)
            for row in range(12):
                ok = np.asarray(allowed)[kg.entity_types].copy()
                ok[exclude[row][exclude[row] >= 0]] = False
                candidates = np.flatnonzero(ok)
                best = candidates[np.argsort(-reference[row, candidates], kind="stable")[:k]]
                finite = np.isfinite(scores[row])
                assert finite.sum() == min(k, len(candidates)) and ids[row].max() < 60
                assert set(ids[row][finite].tolist()) == set(best.tolist())
                np.testing.assert_allclose(scores[row][finite], reference[row, ids[row][finite]], rtol=1e-5, atol=1e-6)


def test_block_scales_are_each_blocks_largest_row_scale_and_ignore_zero_rows() -> None:
    from kgedge.quantization import dequantize_rows, quantize_row_blocks, row_scales

    rng = np.random.default_rng(0)
    table = rng.normal(size=(12, 5)).astype(np.float32) * np.repeat([1.0, 3.0, 0.5], 4)[:, None].astype(np.float32)
    table[-2:] = 0.0  # padding rows
    codes, scales = quantize_row_blocks(table, 8, 4)
    np.testing.assert_allclose(scales[:2], row_scales(table[:8], 8).reshape(2, 4).max(axis=1))
    np.testing.assert_allclose(scales[2], row_scales(table[8:10], 8).max())  # the zero rows do not widen it
    assert np.abs(codes).max() <= 127 and not codes[-2:].any()
    error = np.abs(dequantize_rows(codes, np.repeat(scales, 4)) - table)
    assert np.all(error <= np.repeat(scales, 4)[:, None] / 2 + 1e-7)
    with pytest.raises(ValueError, match="blocks of 5"):
        quantize_row_blocks(table, 8, 5)


def test_a_block_scaled_bundle_says_how_many_bytes_a_query_reads(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    kg = _tiny_kg(num_entities=60)
    checkpoint = _checkpoint("distmult", kg)
    per_row = export_bundle(checkpoint, "x86-avx2", tmp_path / "per_row").manifest["sizes"]
    with monkeypatch.context() as patch:
        patch.setattr(export_graph, "BLOCKED_TOPK_MIN_ENTITIES", 0)
        patch.setattr(export_graph, "BLOCK_SCALES_MIN_ENTITIES", 0)
        blocked = export_bundle(checkpoint, "x86-avx2", tmp_path / "blocked").manifest["sizes"]
    assert per_row["scored_bytes_per_query"] == 60 * (16 + 4)  # codes and per-row scales
    assert blocked["scored_bytes_per_query"] == 64 * 16 + 4 * 8  # codes of 64 rows (4 padding), 8 block scales


def test_block_scaled_rows_are_ordered_by_scale_within_type_runs() -> None:
    kg = _tiny_kg(num_entities=60)
    spec = graph_spec(_checkpoint("distmult", kg))
    order = export_graph.scale_order(spec, 60)
    assert sorted(order.tolist()) == list(range(60))
    np.testing.assert_array_equal(kg.entity_types[order], kg.entity_types)  # runs stay in place: the type mask holds
    peaks = np.abs(spec.entity_table).max(axis=1)[order]
    for t in range(3):
        assert np.all(np.diff(peaks[kg.entity_types == t]) <= 0)


def test_the_inverse_order_is_folded_when_the_session_is_created(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    kg = _tiny_kg(num_entities=60)
    with monkeypatch.context() as patch:
        patch.setattr(export_graph, "BLOCKED_TOPK_MIN_ENTITIES", 0)
        patch.setattr(export_graph, "BLOCK_SCALES_MIN_ENTITIES", 0)
        model = build_graph(graph_spec(_checkpoint("distmult", kg)), resolve_profile("x86-avx2"))
    scatters = Counter(node.op_type for node in _nodes(model.graph))["ScatterElements"]
    assert scatters == 3  # the inverse; in the two masked branches the padding and the exclusions (the plain
    # branch masks its padding among the candidates)
    optimized = _optimized(model, tmp_path)
    assert Counter(node.op_type for node in optimized.graph.node)["ScatterElements"] == 0  # the inverse is folded
    assert Counter(node.op_type for node in _nodes(optimized.graph))["ScatterElements"] == 2


@pytest.mark.parametrize("profile", ["x86-avx2", "int4"])
def test_the_relation_table_is_dequantized_once_when_the_session_is_created(profile: str, tmp_path: Path) -> None:
    """A query gathers one float row of the relation table: the int8 codes times their scales are folded
    into a constant at session creation, so no Cast of the codes is left to run per query."""
    model = build_graph(graph_spec(_checkpoint("distmult", _tiny_kg())), resolve_profile(profile))
    codes = {node.output[0] for node in model.graph.node if node.op_type == "Cast" and "relation_codes" in node.input}
    assert len(codes) == 1  # the table is cast as a whole, not a gathered row
    optimized = _optimized(model, tmp_path)
    assert not any("relation_codes" in node.input or "relation_scales" in node.input for node in optimized.graph.node)
    gathered = [node for node in optimized.graph.node if node.op_type == "Gather" and "relation" in node.input]
    folded = {init.name: init for init in optimized.graph.initializer}
    assert len(gathered) == 1 and folded[gathered[0].input[0]].data_type == onnx.TensorProto.FLOAT


def test_blocked_topk_never_returns_padding_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    kg = _tiny_kg(num_entities=60)
    blocked = _blocked(monkeypatch, graph_spec(_checkpoint("distmult", kg)), resolve_profile("portable"))
    allowed = np.array([False, True, False])  # 20 candidates, k = 60: 40 slots of -inf
    ids, scores = _run(blocked, [0], [0], 60, allowed, np.zeros((1, 0)))
    assert np.isfinite(scores[0]).sum() == 20 and ids.max() < 60
    assert set(ids[0][np.isfinite(scores[0])].tolist()) == set(np.flatnonzero(kg.entity_types == 1).tolist())
    ids, scores = _plain_run(blocked, [0, 1], [0, 1], 60)  # every entity, none of the 4 padding rows
    assert np.isfinite(scores).all() and sorted(ids[0].tolist()) == sorted(ids[1].tolist()) == list(range(60))


@pytest.mark.parametrize(("profile", "block_scales"), [("portable", False), ("x86-avx2", False), ("x86-avx2", True)])
def test_padding_copies_of_the_best_row_never_take_a_slot(monkeypatch: pytest.MonkeyPatch, profile: str,
                                                          block_scales: bool) -> None:
    """The padding rows copy the row stored last; when that row is the best, its copies tie it in the last
    block, and a plain query must still return each entity once, as the masked branch (which masks the
    padding before the block maxima) and, without block scales, one TopK over all rows rank them."""
    kg = _tiny_kg(num_entities=60)  # blocks of 8: 64 rows, 4 of them padding
    spec = graph_spec(_checkpoint("distmult", kg))
    chosen = resolve_profile(profile)
    last = int(export_graph.scale_order(spec, 60)[-1]) if block_scales else 59
    table = spec.entity_table.copy()
    # aligned with the query (0, 0), its largest |value| unchanged: still stored last, and the best
    table[last] = np.abs(table[last]).max() * np.sign(table[0] * spec.relation_table[0])
    spec = dataclasses.replace(spec, entity_table=table)
    assert not block_scales or int(export_graph.scale_order(spec, 60)[-1]) == last
    with monkeypatch.context() as patch:
        patch.setattr(export_graph, "BLOCKED_TOPK_MIN_ENTITIES", 0)
        patch.setattr(export_graph, "BLOCK_SCALES_MIN_ENTITIES", 0 if block_scales else 10**9)
        assert export_graph.block_scaled(spec, chosen) == block_scales
        blocked = build_graph(spec, chosen)
    single = build_graph(spec, chosen)
    for k in (1, 2, 5, 12, 60):
        ids, scores = _plain_run(blocked, [0], [0], k)
        assert ids[0, 0] == last and len(set(ids[0].tolist())) == k and ids.max() < 60
        masked = _run(blocked, [0], [0], k, [True, True, True], np.full((1, 2), -1))
        np.testing.assert_array_equal(ids, masked[0])
        np.testing.assert_array_equal(scores, masked[1])
        if not block_scales:
            np.testing.assert_array_equal(ids, _plain_run(single, [0], [0], k)[0])


@pytest.mark.parametrize(("name", "profile", "blocked"), [("distmult", "x86-avx2", False), ("distmult", "x86-avx2", True),
                                                         ("rotate", "int4", True), ("transe-l1", "portable", False)])
def test_a_plain_run_answers_like_a_masked_run_that_restricts_nothing(monkeypatch: pytest.MonkeyPatch, name: str,
                                                                     profile: str, blocked: bool) -> None:
    """A run fed only the ids and k takes the branch without masks; it must rank as the masked branch does
    when every type is allowed and nothing is excluded (-1 is padding)."""
    kg = _tiny_kg(num_entities=60)
    spec, chosen = graph_spec(_checkpoint(name, kg)), resolve_profile(profile)
    model = _blocked(monkeypatch, spec, chosen) if blocked else build_graph(spec, chosen)
    heads, relations = np.arange(12), np.arange(12) % 6
    for k in (1, 10, 60):
        plain = _plain_run(model, heads, relations, k)
        masked = _run(model, heads, relations, k, [True, True, True], np.full((12, 2), -1))
        np.testing.assert_array_equal(plain[1], masked[1])
        np.testing.assert_array_equal(plain[0], masked[0])


def test_type_branches_compute_their_scores_without_copying_them() -> None:
    kg = _tiny_kg()
    model = build_graph(graph_spec(_checkpoint("distmult", kg)), resolve_profile("x86-avx2"))
    (branch_node,) = [node for node in model.graph.node if node.op_type == "If"]  # masked or plain
    masked = next(a.g for a in branch_node.attribute if a.name == "then_branch")
    inner = [node for node in _nodes(masked) if node.op_type == "If"]  # the type mask or not
    assert len(inner) == 1 and "Identity" not in {node.op_type for node in _nodes(model.graph)}


@pytest.mark.parametrize("name", KGE_MODELS)
def test_export_bundle_writes_checksummed_bundle(tmp_path: Path, name: str) -> None:
    kg = _tiny_kg()
    result = export_bundle(_checkpoint(name, kg), "portable", tmp_path / "bundle", kg=kg, archive=True)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["format"] == "kgedge-bundle" and manifest["model"]["name"] == name
    assert set(manifest["files"]) == {p.name for p in (tmp_path / "bundle").iterdir()} - {"manifest.json"}
    assert manifest["validation"]["max_abs_score_diff"] <= 1e-3
    assert result.archive is not None and result.archive.is_file()
    onnx.checker.check_model(str(tmp_path / "bundle" / "model.onnx"), full_check=True)
    assert not list(tmp_path.glob(".bundle*")), "temporary directories left behind"


def test_quantized_bundle_is_about_a_quarter_of_fp32(tmp_path: Path) -> None:
    kg = _tiny_kg(num_entities=2000)
    checkpoint = _checkpoint("distmult", kg, dim=64)
    fp32 = export_bundle(checkpoint, "portable", tmp_path / "fp32")
    int8 = export_bundle(checkpoint, "x86-avx2", tmp_path / "int8")
    ratio = int8.manifest["sizes"]["table_bytes"] / fp32.manifest["sizes"]["table_bytes"]
    assert ratio <= 0.27
    model_bytes = {p: (tmp_path / p / "model.onnx").stat().st_size for p in ("fp32", "int8")}
    assert model_bytes["int8"] <= 0.3 * model_bytes["fp32"]


def test_failed_validation_writes_nothing(tmp_path: Path) -> None:
    kg = _tiny_kg()
    strict = replace(resolve_profile("x86-avx2"), validation=replace(resolve_profile("x86-avx2").validation,
                                                                     min_topk_overlap=1.0))
    checkpoint = _checkpoint("distmult", kg, dim=64, seed=3)
    with pytest.raises(ExportValidationError, match="overlap"):
        export_bundle(checkpoint, strict, tmp_path / "bundle", kg=kg)
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.iterdir())


def test_export_refuses_non_empty_target(tmp_path: Path) -> None:
    kg = _tiny_kg()
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_bundle(_checkpoint("distmult", kg), "portable", tmp_path / "bundle")
    assert (tmp_path / "bundle" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("table_bits", 5, "table_bits=5"), ("format", "qdq2", "format='qdq2'"), ("opset", 11, "opset=11"),
     ("weight_type", "int16", "weight_type='int16'"), ("arch", "mips", "arch='mips'"),
     ("cpu_flags", "avx2", "cpu_flags='avx2'"), ("cpu_flags", ["avx2", 3], "cpu_flags=['avx2', 3]")],
)
def test_bad_profile_names_field_value_and_allowed(field: str, value: object, message: str) -> None:
    raw = {"name": "mine", "format": "qoperator", "table_bits": 8, field: value}
    with pytest.raises(ProfileError, match=re.escape(message)) as info:
        ExportProfile.from_dict(raw)
    assert "allowed" in str(info.value)


def test_profile_toml_file_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\nformat = "qoperator"\ntable_bits = 8\ncolour = "red"\n')
    with pytest.raises(ProfileError, match="unknown field.*colour"):
        resolve_profile(str(path))
    path.write_text('name = "mine"\nformat = "qoperator"\ntable_bits = 8\n[session]\nintra_op_num_threads = 2\n')
    assert resolve_profile(str(path)).session.intra_op_num_threads == 2
    with pytest.raises(ProfileError, match="unknown profile 'nope'.*portable"):
        resolve_profile("nope")


def test_shipped_profiles_cover_the_targets() -> None:
    assert {"portable", "x86-avx2", "x86-avx512-vnni", "arm64"} <= set(PROFILES)
