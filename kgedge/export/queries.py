"""Each model's query ``q = f(h, r)`` as ONNX nodes: the ONNX twin of ``KGModel.query``.

A query function gets the whole relation table, not the query's relation row: whatever depends on the
relation alone (a complex relation's two halves laid out for the product, RotatE's cosines and sines) is
computed from the table by nodes whose inputs are all constants, which onnxruntime folds into tables
once, when the session is created. A query then gathers rows of those tables and runs only the nodes
that involve the head: one ``Mul`` for DistMult, one ``Add`` for TransE, and for ComplEx and RotatE

    q = h ⊙ A[r] + swap(h) ⊙ B[r],   A = [re | re],  B = [-im | im],  swap([x | y]) = [y | x]

(``[h_re·r_re - h_im·r_im | h_im·r_re + h_re·r_im]``), five nodes where slicing and concatenating the
halves per query took eleven. The registry is a plain dict keyed by model name, so a new model adds one
function here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kgedge.export.builder import GraphBuilder

# (builder, head rows [B, W], relation table [R, Wr] (constants only), relation ids [B], W) -> query [B, W]
QueryFn = Callable[[GraphBuilder, str, str, str, int], str]


def _rows(g: GraphBuilder, table: str, relation: str) -> str:
    return g.op("Gather", table, relation, axis=0)


def _rotate_by(g: GraphBuilder, h: str, re: str, im: str, relation: str, width: int) -> str:
    """``h ∘ (re + i·im)`` per complex dimension; ``re``, ``im``: tables ``[R, W/2]`` of constants."""
    same = g.op("Concat", re, re, axis=-1)  # A
    signed = g.op("Concat", g.op("Neg", im), im, axis=-1)  # B
    half = width // 2
    swap = g.const(np.concatenate([np.arange(half, width), np.arange(half)]).astype(np.int64))
    swapped = g.op("Gather", h, swap, axis=1)
    return g.op("Add", g.op("Mul", h, _rows(g, same, relation)), g.op("Mul", swapped, _rows(g, signed, relation)))


def _halves(g: GraphBuilder, x: str, width: int) -> tuple[str, str]:
    half = width // 2
    return g.slice_last(x, 0, half), g.slice_last(x, half, width)


def distmult(g: GraphBuilder, h: str, table: str, relation: str, width: int) -> str:
    return g.op("Mul", h, _rows(g, table, relation))


def transe(g: GraphBuilder, h: str, table: str, relation: str, width: int) -> str:
    return g.op("Add", h, _rows(g, table, relation))


def complex_(g: GraphBuilder, h: str, table: str, relation: str, width: int) -> str:
    re, im = _halves(g, table, width)
    return _rotate_by(g, h, re, im, relation, width)


def rotate(g: GraphBuilder, h: str, table: str, relation: str, width: int) -> str:
    return _rotate_by(g, h, g.op("Cos", table), g.op("Sin", table), relation, width)


QUERIES: dict[str, QueryFn] = {"distmult": distmult, "transe": transe, "complex": complex_, "rotate": rotate}
# queries with f(c · h, r) = c · f(h, r) for c > 0 (TransE's h + r is not)
LINEAR_IN_HEAD = frozenset({"distmult", "complex", "rotate"})


def resolve_query(model: str) -> QueryFn:
    try:
        return QUERIES[model]
    except KeyError:
        raise ValueError(f"no ONNX export for model {model!r}; exportable: {', '.join(QUERIES)}") from None
