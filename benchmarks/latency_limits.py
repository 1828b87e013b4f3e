"""Helpers of ``latency_peers.py``: the physical limit of a top-k query, and operator profiles.

* the limit's parts, each timed in the same run as the variants it bounds: the entity table read at
  the streaming bandwidth of one core (``kgedge.bench.read_bandwidth``), onnxruntime's TopK over N
  scores, and the cost of one ``session.run`` call with the bundle's inputs and outputs;
* the integer multiply-add rate of onnxruntime's ``MatMulInteger`` (u8 x u8, B prepacked, in cache);
* onnxruntime's profiler, per operator type.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kgedge.bench.machine import median_seconds
from kgedge.export.graph import QUERY_ZERO_POINT, TABLE_ZERO_POINT

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


def bundle_feeds(head: int, relation: int, k: int) -> dict[str, np.ndarray]:
    """One query's inputs, exactly as the runtime feeds them when nothing is excluded and every type is
    allowed: the ids and k (the other inputs keep their defaults)."""
    return {"head": np.array([head], np.int64), "relation": np.array([relation], np.int64),
            "k": np.array([k], np.int64)}


def call_session(num_types: int) -> ort.InferenceSession:
    """A graph with the bundle's inputs (those with defaults too) and outputs that does almost nothing: the
    cost of a call fed as the runtime feeds a query that restricts nothing (:func:`bundle_feeds`)."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Unsqueeze", ["head", "axis"], ["ids"]),
             helper.make_node("Cast", ["ids"], ["scores"], to=TensorProto.FLOAT)]
    inputs = [vi("head", TensorProto.INT64, ["batch"]), vi("relation", TensorProto.INT64, ["batch"]),
              vi("k", TensorProto.INT64, [1]), vi("allowed_types", TensorProto.BOOL, [num_types]),
              vi("exclude", TensorProto.INT64, ["batch", "x"]), vi("masked", TensorProto.BOOL, [])]
    outputs = [vi("ids", TensorProto.INT64, ["batch", 1]), vi("scores", TensorProto.FLOAT, ["batch", 1])]
    defaults = [numpy_helper.from_array(np.ones(num_types, bool), "allowed_types"),
                numpy_helper.from_array(np.zeros((1, 0), np.int64), "exclude"),
                numpy_helper.from_array(np.array(False), "masked")]
    return session(_model(nodes, inputs, outputs, [numpy_helper.from_array(np.array([1], np.int64), "axis"), *defaults]))


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
