"""Validation run on every export: fp32 ONNX against torch, quantized ONNX against fp32."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort

from kgedge.data.kg import KnowledgeGraph
from kgedge.evaluate import ScoreFn, evaluate_link_prediction
from kgedge.export.profile import ValidationThresholds

# full score rows are materialised for validation: keep a probe batch under this many floats
_MAX_FLOATS = 32_000_000


class ExportValidationError(RuntimeError):
    """The exported graph disagrees with its reference beyond the profile's thresholds."""


@dataclass(frozen=True)
class ValidationReport:
    """Figures measured at export; stored in the bundle manifest.

    Attributes:
        max_abs_score_diff: fp32 ONNX vs torch over the probe queries.
        topk_overlap: mean top-k overlap of the exported graph with fp32 ONNX.
        mrr_torch, mrr_fp32, mrr_export: filtered test MRR (None without data).
        mrr_drop: relative drop of the export against fp32 (None without data).
    """

    probe_queries: int
    max_abs_score_diff: float
    topk: int
    topk_overlap: float
    mrr_torch: float | None = None
    mrr_fp32: float | None = None
    mrr_export: float | None = None
    mrr_drop: float | None = None
    evaluated_triples: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def session_for(model: onnx.ModelProto | bytes, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: onnxruntime warns about every input that has a default
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def onnx_scorer(session: ort.InferenceSession, num_entities: int, num_types: int) -> ScoreFn:
    """Full score rows from a top-k graph (``k = N``, scattered back by id), shape ``(B, N)``."""
    allowed = np.ones(num_types, dtype=bool)
    k = np.array([num_entities], dtype=np.int64)
    every_input = "allowed_types" in {i.name for i in session.get_inputs()}  # a graph without input defaults

    def score(heads: np.ndarray, relations: np.ndarray) -> np.ndarray:
        heads = np.asarray(heads, dtype=np.int64)
        out = np.empty((len(heads), num_entities), dtype=np.float32)
        step = max(1, _MAX_FLOATS // (4 * num_entities))
        for start in range(0, len(heads), step):
            part = slice(start, start + step)
            h = heads[part]
            feeds = {"head": h, "relation": np.asarray(relations, dtype=np.int64)[part], "k": k}
            if every_input:
                feeds.update(allowed_types=allowed, exclude=np.zeros((len(h), 0), dtype=np.int64))
            ids, values = session.run(None, feeds)
            np.put_along_axis(out[part], ids, values, axis=1)
        return out

    return score


def probe_queries(kg: KnowledgeGraph | None, num_entities: int, num_relations: int, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Queries to compare on: test triples (both directions) when data is given, else random ids."""
    rng = np.random.default_rng(seed)
    if kg is not None and len(kg.test):
        queries = kg.with_reciprocals(kg.test)
        pick = rng.choice(len(queries), size=min(count, len(queries)), replace=False)
        return queries[pick, 0], queries[pick, 1]
    return rng.integers(0, num_entities, count), rng.integers(0, num_relations, count)


def topk_overlap(reference: np.ndarray, candidate: np.ndarray, k: int) -> float:
    """Mean ``|top-k(reference) ∩ top-k(candidate)| / k`` over rows of two ``(B, N)`` score arrays."""
    k = min(k, reference.shape[1])
    ref = np.argpartition(-reference, k - 1, axis=1)[:, :k]
    cand = np.argpartition(-candidate, k - 1, axis=1)[:, :k]
    return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ref, cand)]))


def validate_export(
    torch_scores: ScoreFn,
    fp32: ScoreFn,
    exported: ScoreFn,
    thresholds: ValidationThresholds,
    heads: np.ndarray,
    relations: np.ndarray,
    kg: KnowledgeGraph | None,
    quantized: bool,
    max_eval_triples: int = 5000,
) -> ValidationReport:
    """Compare, then raise :class:`ExportValidationError` when a threshold is missed."""
    reference = torch_scores(heads, relations)
    onnx_fp32 = fp32(heads, relations)
    finite = np.isfinite(reference)
    diff = float(np.max(np.abs(reference[finite] - onnx_fp32[finite]))) if finite.any() else 0.0
    if diff > thresholds.max_abs_score_diff:
        raise ExportValidationError(
            f"fp32 ONNX scores differ from torch by up to {diff:.3g} (allowed {thresholds.max_abs_score_diff:.3g}); "
            "the graph does not compute the model's scores"
        )
    overlap = topk_overlap(onnx_fp32, exported(heads, relations), thresholds.topk) if quantized else 1.0
    report = {"probe_queries": len(heads), "max_abs_score_diff": diff, "topk": thresholds.topk, "topk_overlap": overlap}
    if kg is not None and len(kg.test):
        n = min(len(kg.test), max_eval_triples)
        report["mrr_torch"] = evaluate_link_prediction(torch_scores, kg, "test", max_triples=n)["mrr"]
        report["mrr_fp32"] = evaluate_link_prediction(fp32, kg, "test", max_triples=n)["mrr"]
        report["mrr_export"] = (
            evaluate_link_prediction(exported, kg, "test", max_triples=n)["mrr"] if quantized else report["mrr_fp32"]
        )
        report["mrr_drop"] = max(0.0, 1.0 - report["mrr_export"] / max(report["mrr_fp32"], 1e-12))
        report["evaluated_triples"] = n
    result = ValidationReport(**report)  # type: ignore[arg-type]
    if overlap < thresholds.min_topk_overlap:
        raise ExportValidationError(
            f"quantized top-{thresholds.topk} overlap with fp32 is {overlap:.4f}, below the profile's "
            f"{thresholds.min_topk_overlap}; use a profile with more table bits, or fine-tune with QAT (kgedge compress)"
        )
    if result.mrr_drop is not None and result.mrr_drop > thresholds.max_mrr_drop:
        raise ExportValidationError(
            f"quantized test MRR {result.mrr_export:.4f} is {100 * result.mrr_drop:.2f}% below fp32 "
            f"{result.mrr_fp32:.4f} (allowed {100 * thresholds.max_mrr_drop:.2f}%); use more table bits or QAT"
        )
    return result
