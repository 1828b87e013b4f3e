"""Helpers of ``latency_peers.py``: the physical limit of a top-k query, and graph prototypes.

* the limit's parts, each timed in the same run as the variants it bounds: the entity table read at
  the streaming bandwidth of one core (``kgedge.bench.read_bandwidth``), onnxruntime's TopK over N
  scores, and the cost of one ``session.run`` call with the bundle's inputs and outputs;
* the integer multiply-add rate of onnxruntime's ``MatMulInteger`` (u8 x u8, B prepacked, in cache);
* prototypes of the int8 graph that differ from ``kgedge/export/graph.py`` in one respect each, to
  measure a proposed change before the export owner applies it (never used by the library).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kgedge.bench.machine import median_seconds
from kgedge.export.builder import BOOL, FLOAT, INT64, GraphBuilder, tensor_input
from kgedge.export.graph import QUERY_ZERO_POINT, TABLE_ZERO_POINT, GraphSpec, _gather_rows, _type_bias
from kgedge.export.profile import ExportProfile
from kgedge.export.queries import resolve_query

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(model: onnx.ModelProto | bytes, threads: int = 1, level: str = "all") -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = LEVELS[level]
    options.log_severity_level = 3
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _model(nodes: list, inputs: list, outputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "micro", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def bundle_feeds(head: int, relation: int, k: int, num_types: int) -> dict[str, np.ndarray]:
    """One query's inputs, exactly as the runtime feeds them (nothing excluded, every type allowed)."""
    return {"head": np.array([head], np.int64), "relation": np.array([relation], np.int64),
            "k": np.array([k], np.int64), "allowed_types": np.ones(num_types, dtype=bool),
            "exclude": np.zeros((1, 0), np.int64)}


def call_session(num_types: int) -> ort.InferenceSession:
    """A graph with the bundle's inputs and outputs that does almost nothing: the cost of a call."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Unsqueeze", ["head", "axis"], ["ids"]),
             helper.make_node("Cast", ["ids"], ["scores"], to=TensorProto.FLOAT)]
    inputs = [vi("head", TensorProto.INT64, ["batch"]), vi("relation", TensorProto.INT64, ["batch"]),
              vi("k", TensorProto.INT64, [1]), vi("allowed_types", TensorProto.BOOL, [num_types]),
              vi("exclude", TensorProto.INT64, ["batch", "x"])]
    outputs = [vi("ids", TensorProto.INT64, ["batch", 1]), vi("scores", TensorProto.FLOAT, ["batch", 1])]
    return session(_model(nodes, inputs, outputs, [numpy_helper.from_array(np.array([1], np.int64), "axis")]))


def topk_session() -> ort.InferenceSession:
    """TopK alone over a ``[1, N]`` float input (fed from numpy: onnxruntime does not copy it)."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("TopK", ["scores", "k"], ["values", "ids"], axis=1, largest=1, sorted=1)]
    return session(_model(nodes, [vi("scores", TensorProto.FLOAT, [1, "n"]), vi("k", TensorProto.INT64, [1])],
                          [vi("values", TensorProto.FLOAT, [1, "k"]), vi("ids", TensorProto.INT64, [1, "k"])], []))


def mac_rates(width: int = 64, columns: int = 8192, repeats: int = 50) -> dict[str, float]:
    """Multiply-adds per second of ``MatMulInteger`` (u8 x u8 with zero points, B constant so that
    onnxruntime prepacks it) and of a float ``MatMul``, with B small enough to stay in cache, at
    M = 1 (one query) and M = 64 (a batch). Keys: ``int8_m1``, ``int8_m64``, ``fp32_m1``, ``fp32_m64``.
    """
    rng = np.random.default_rng(0)
    vi = helper.make_tensor_value_info
    b_u8 = rng.integers(0, 256, (width, columns)).astype(np.uint8)
    b_f32 = rng.normal(size=(width, columns)).astype(np.float32)
    rates = {}
    for m in (1, 64):
        int8 = _model([helper.make_node("MatMulInteger", ["A", "B", "za", "zb"], ["Y"])],
                      [vi("A", TensorProto.UINT8, [m, width])], [vi("Y", TensorProto.INT32, [m, columns])],
                      [numpy_helper.from_array(b_u8, "B"), numpy_helper.from_array(np.uint8(QUERY_ZERO_POINT), "za"),
                       numpy_helper.from_array(np.uint8(TABLE_ZERO_POINT), "zb")])
        fp32 = _model([helper.make_node("MatMul", ["A", "B"], ["Y"])], [vi("A", TensorProto.FLOAT, [m, width])],
                      [vi("Y", TensorProto.FLOAT, [m, columns])], [numpy_helper.from_array(b_f32, "B")])
        a_u8 = {"A": rng.integers(0, 256, (m, width)).astype(np.uint8)}
        a_f32 = {"A": rng.normal(size=(m, width)).astype(np.float32)}
        for name, model, feeds in (("int8", int8, a_u8), ("fp32", fp32, a_f32)):
            s = session(model)
            seconds = median_seconds(lambda s=s, feeds=feeds: s.run(None, feeds), repeats)
            rates[f"{name}_m{m}"] = m * width * columns / seconds
    return rates


# -- prototypes of the int8 graph ---------------------------------------------------------------------


def prototype_int8_graph(spec: GraphSpec, profile: ExportProfile, mask: str = "float", scatter: bool = True) -> onnx.ModelProto:
    """The qoperator top-k graph of ``kgedge/export/graph.py`` with one change, and optional cuts
    (dot-product models only):

    * always: the positive per-query scale ``q_scale`` multiplies the k output values after TopK
      (it cannot change the order), instead of every score: the ``[B, N]`` product
      ``q_scale * e_scale`` disappears, and onnxruntime (level extended/all) no longer fuses
      MatMulInteger + Cast + Mul into MatMulIntegerToFloat, whose kernel is slower here than the
      prepacked MatMulInteger followed by Cast and Mul;
    * ``mask``: ``float`` = the exported type bias (Expand runs, Concat, Add), ``bool`` = the same
      runs as a bool mask applied with Where, ``none`` = no type mask;
    * ``scatter=False``: no ScatterElements for the excluded ids (they would be dropped by the
      runtime from a top-(k + X) instead). ``mask="none", scatter=False`` is a floor, not a graph to ship.
    """
    if spec.interaction != "dot" or profile.format != "qoperator":
        raise ValueError("prototype: dot-product models and qoperator profiles only")
    g = GraphBuilder()
    h, r, (table_t, e_scale) = _gather_rows(g, spec, profile, "head", "relation")
    q = resolve_query(spec.model)(g, h, r, spec.entity_table.shape[1])
    peak = g.op("ReduceMax", g.op("Abs", q), g.const(np.array([1], np.int64)), keepdims=1)
    q_scale = g.op("Div", g.op("Max", peak, g.const(np.float32(1e-12))), g.const(np.float32(127.0)))
    shifted = g.op("Clip", g.op("Add", g.op("Round", g.op("Div", q, q_scale)), g.const(np.float32(QUERY_ZERO_POINT))),
                   g.const(np.float32(0.0)), g.const(np.float32(255.0)))
    q_u8 = g.op("Cast", shifted, to=TensorProto.UINT8)
    zeros = [g.const(np.uint8(QUERY_ZERO_POINT))]
    if profile.weight_type == "uint8":
        zeros.append(g.const(np.uint8(TABLE_ZERO_POINT)))
    scores = g.op("Mul", g.op("Cast", g.op("MatMulInteger", q_u8, table_t, *zeros), to=FLOAT), e_scale)
    minus_inf = g.const(np.float32(-np.inf))
    if mask == "float":
        scores = g.op("Add", scores, _type_bias(g, spec, minus_inf))
    elif mask == "bool":
        types = spec.entity_types.astype(np.int64)
        starts = np.flatnonzero(np.diff(types, prepend=-1))
        lengths = np.diff(np.append(starts, len(types)))
        pieces = [g.op("Expand", g.op("Slice", "allowed_types", g.const(np.array([t], np.int64)),
                                      g.const(np.array([t + 1], np.int64))), g.const(np.array([n], np.int64)))
                  for t, n in zip(types[starts], lengths)]
        allowed = pieces[0] if len(pieces) == 1 else g.op("Concat", *pieces, axis=0)
        scores = g.op("Where", allowed, scores, minus_inf)
    elif mask != "none":
        raise ValueError(f"mask={mask!r}; allowed: float, bool, none")
    if scatter:
        valid = g.op("GreaterOrEqual", "exclude", g.const(np.int64(0)))
        index = g.op("Where", valid, "exclude", g.const(np.int64(0)))
        update = g.op("Where", valid, g.op("Expand", minus_inf, g.op("Shape", "exclude")), g.const(np.float32(np.inf)))
        scores = g.op("ScatterElements", scores, index, update, axis=1, reduction="min")
    values, ids = g.op_multi("TopK", scores, "k", outputs=2, axis=1, largest=1, sorted=1)
    g.op("Identity", ids, name="ids")
    g.op("Mul", values, q_scale, name="scores")
    inputs = [  # the bundle contract, as in kgedge/export/graph.py
        tensor_input("head", INT64, ["batch"]), tensor_input("relation", INT64, ["batch"]), tensor_input("k", INT64, [1]),
        tensor_input("allowed_types", BOOL, [spec.num_types]), tensor_input("exclude", INT64, ["batch", "num_excluded"]),
    ]
    outputs = [tensor_input("ids", INT64, ["batch", "k"]), tensor_input("scores", FLOAT, ["batch", "k"])]
    return g.build(inputs, outputs, profile.opset, "prototype")


def op_profile(model: bytes, feeds: list[dict[str, np.ndarray]], runs: int = 40, warmup: int = 5,
               level: str = "all") -> dict[str, float]:
    """Microseconds per run spent in each operator type (onnxruntime's profiler, 1 thread), the
    ``warmup`` first runs left out; ``"(run)"`` is the whole ``session.run``."""
    import json
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = LEVELS[level]
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        s = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        for i in range(warmup + runs):
            s.run(None, feeds[i % len(feeds)])
        events = json.loads(Path(s.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    if len(starts) <= warmup:
        return {}
    after = starts[warmup]
    totals: dict[str, float] = {}
    for e in events:
        if e.get("ts", 0) < after:
            continue
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + e["dur"]
        elif e.get("name") == "model_run":
            totals["(run)"] = totals.get("(run)", 0.0) + e["dur"]
    return {op: total / runs for op, total in sorted(totals.items(), key=lambda kv: -kv[1])}
