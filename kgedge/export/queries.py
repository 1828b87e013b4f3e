"""Each model's query ``q = f(h, r)`` as ONNX nodes: the ONNX twin of ``KGModel.query``.

The registry is a plain dict keyed by model name, so a new model adds one function here.
"""

from __future__ import annotations

from collections.abc import Callable

from kgedge.export.builder import GraphBuilder

# (builder, head rows [B, W], relation rows [B, Wr], W) -> query name [B, W]
QueryFn = Callable[[GraphBuilder, str, str, int], str]


def _halves(g: GraphBuilder, x: str, width: int) -> tuple[str, str]:
    half = width // 2
    return g.slice_last(x, 0, half), g.slice_last(x, half, width)


def _rotate_by(g: GraphBuilder, h: str, r_re: str, r_im: str, width: int) -> str:
    h_re, h_im = _halves(g, h, width)
    real = g.op("Sub", g.op("Mul", h_re, r_re), g.op("Mul", h_im, r_im))
    imag = g.op("Add", g.op("Mul", h_re, r_im), g.op("Mul", h_im, r_re))
    return g.op("Concat", real, imag, axis=-1)


def distmult(g: GraphBuilder, h: str, r: str, width: int) -> str:
    return g.op("Mul", h, r)


def transe(g: GraphBuilder, h: str, r: str, width: int) -> str:
    return g.op("Add", h, r)


def complex_(g: GraphBuilder, h: str, r: str, width: int) -> str:
    r_re, r_im = _halves(g, r, width)
    return _rotate_by(g, h, r_re, r_im, width)


def rotate(g: GraphBuilder, h: str, r: str, width: int) -> str:
    return _rotate_by(g, h, g.op("Cos", r), g.op("Sin", r), width)


QUERIES: dict[str, QueryFn] = {"distmult": distmult, "transe": transe, "complex": complex_, "rotate": rotate}


def resolve_query(model: str) -> QueryFn:
    try:
        return QUERIES[model]
    except KeyError:
        raise ValueError(f"no ONNX export for model {model!r}; exportable: {', '.join(QUERIES)}") from None
