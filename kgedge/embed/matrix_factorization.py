"""Matrix-factorisation embeddings: truncated SVD of a normalised adjacency or a PPMI matrix.

Two matrices of the (undirected) entity graph ``A`` with degrees ``D`` and volume ``vol = Σ D``:

- ``adjacency``: ``D^{-1/2} (A + I) D^{-1/2}``, the spectral (GCN) propagation matrix;
- ``ppmi``: the shifted positive PMI of ``window``-step random-walk co-occurrences, which is the
  matrix DeepWalk factorises implicitly (NetMF, Qiu et al., 2018):

      M = vol / (b · T) · (Σ_{r=1..T} (D^{-1} A)^r) D^{-1},     PPMI = log(max(M, 1))

  kept sparse (``log max(0, 1) = 0``) and computed with sparse products, so the graph's reach within
  ``T`` steps bounds the cost.

The embedding is ``U_k √Σ_k`` from the top ``k = num_factors`` singular triplets: exact SVD up to
``dense_limit`` nodes, else ``scipy.sparse.linalg.svds``. When the graph has fewer nodes than factors
the table is padded with zero columns, so its width is always ``num_factors``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from kgedge.embed.entity_graph import EntityGraph

log = logging.getLogger(__name__)

MatrixKind = Literal["ppmi", "adjacency"]
MATRICES: tuple[str, ...] = ("ppmi", "adjacency")


@dataclass(frozen=True)
class MFConfig:
    """What to factorise and how many factors to keep.

    Attributes:
        num_factors: ``k``, the embedding width.
        matrix: ``ppmi`` or ``adjacency``.
        window: ``T``, walk steps whose co-occurrences PPMI counts (``ppmi`` only).
        negative: ``b``, the shift of PMI (skip-gram's number of negatives).
        weighted: count parallel triples between two entities as heavier edges.
        dense_limit: up to this many nodes, exact dense SVD; above, ARPACK (``svds``).
        seed: for the ARPACK start vector.
    """

    num_factors: int = 128
    matrix: MatrixKind = "ppmi"
    window: int = 2
    negative: float = 1.0
    weighted: bool = False
    dense_limit: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.num_factors, int) or self.num_factors < 1:
            raise ValueError(f"MFConfig.num_factors={self.num_factors!r}; allowed: a positive integer")
        if self.matrix not in MATRICES:
            raise ValueError(f"MFConfig.matrix={self.matrix!r}; allowed: {', '.join(MATRICES)}")
        if not isinstance(self.window, int) or not 1 <= self.window <= 10:
            raise ValueError(f"MFConfig.window={self.window!r}; allowed: an integer from 1 to 10")
        if not self.negative > 0:
            raise ValueError(f"MFConfig.negative={self.negative!r}; allowed: > 0")
        if not isinstance(self.dense_limit, int) or self.dense_limit < 0:
            raise ValueError(f"MFConfig.dense_limit={self.dense_limit!r}; allowed: an integer >= 0")


@dataclass(frozen=True)
class MFEmbedding:
    """A factorisation embedding.

    Attributes:
        table: shape ``(num_nodes, num_factors)`` float32.
        singular_values: shape ``(min(num_factors, num_nodes),)`` descending.
        matrix_nnz: non-zeros of the factorised matrix.
        seconds: wall time (matrix and SVD).
    """

    table: Tensor
    singular_values: np.ndarray
    matrix_nnz: int
    seconds: float


def normalized_adjacency(graph: EntityGraph, weighted: bool = False) -> sp.csr_matrix:
    """``D^{-1/2} (A + I) D^{-1/2}``, shape ``(n, n)``."""
    a = graph.adjacency(weighted) + sp.identity(graph.num_nodes, format="csr")
    inv_sqrt = 1.0 / np.sqrt(np.asarray(a.sum(axis=1)).ravel())
    scale = sp.diags(inv_sqrt)
    return (scale @ a @ scale).tocsr()


def ppmi_matrix(graph: EntityGraph, window: int, negative: float = 1.0, weighted: bool = False) -> sp.csr_matrix:
    """NetMF's ``log(max(M, 1))`` for a ``window``-step walk, shape ``(n, n)``, sparse."""
    a = graph.adjacency(weighted).astype(np.float64)
    degree = np.asarray(a.sum(axis=1)).ravel()
    inv_degree = np.where(degree > 0, 1.0 / np.maximum(degree, 1e-12), 0.0)
    transition = (sp.diags(inv_degree) @ a).tocsr()
    power, total = transition, transition.copy()
    for _ in range(window - 1):
        power = (power @ transition).tocsr()
        total = total + power
    m = (total @ sp.diags(inv_degree)).tocsr() * (degree.sum() / (negative * window))
    m.data = np.log(np.maximum(m.data, 1.0))
    m.eliminate_zeros()
    return m


def factorize(matrix: sp.spmatrix, num_factors: int, dense_limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(U_k √Σ_k`` padded to ``num_factors`` columns, ``Σ_k)`` of the top singular triplets."""
    n = matrix.shape[0]
    k = min(num_factors, n)
    if n <= dense_limit or k >= n - 1:
        u, s, _ = np.linalg.svd(matrix.toarray(), full_matrices=False)
        u, s = u[:, :k], s[:k]
    else:
        start = np.random.default_rng(seed).standard_normal(n)
        u, s, _ = spla.svds(matrix.astype(np.float64), k=k, v0=start)
        order = np.argsort(-s)
        u, s = u[:, order], s[order]
    table = np.zeros((n, num_factors), dtype=np.float64)
    table[:, :k] = u * np.sqrt(s)
    return table, s


def mf_embedding(graph: EntityGraph, config: MFConfig) -> MFEmbedding:
    """Factorise ``config.matrix`` of ``graph`` (see the module docstring)."""
    started = time.perf_counter()
    if config.matrix == "adjacency":
        matrix = normalized_adjacency(graph, config.weighted)
    else:
        matrix = ppmi_matrix(graph, config.window, config.negative, config.weighted)
    table, singular = factorize(matrix, config.num_factors, config.dense_limit, config.seed)
    seconds = time.perf_counter() - started
    log.info("mf (%s): %d x %d matrix with %d non-zeros, %d factors in %.1f s",
             config.matrix, matrix.shape[0], matrix.shape[1], matrix.nnz, config.num_factors, seconds)
    return MFEmbedding(torch.as_tensor(table, dtype=torch.float32), singular, int(matrix.nnz), seconds)
