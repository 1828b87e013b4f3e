"""Sparse aggregation for graph encoders: ``Y = S(w) X`` with learnable edge weights, in plain torch.

A graph encoder's inner loop is a weighted sum of neighbour rows,
``y_i = Σ_{e: dst_e = i} w_e · x_{src_e}``, i.e. a sparse ``(n_rows, n_cols)`` matrix ``S`` with one
entry ``w_e`` per edge times a dense ``X``. Autograd through ``torch.sparse.mm`` on COO tensors is
two orders of magnitude slower on CPU than the forward, and gathering ``X[src]`` costs ``E x d`` floats
per layer, so :func:`propagate` is a custom autograd function over a fixed CSR structure:

- forward: ``S @ X`` (CSR times dense),
- ``dL/dX = Sᵀ @ G`` (the transposed structure, built once),
- ``dL/dw_e = <G_{dst_e}, X_{src_e}>`` by ``torch.sparse.sampled_addmm`` (no ``E x d`` gather).

The structure depends only on the graph, so a model builds it once per graph and reuses it every step.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class SparseStructure:
    """The pattern of ``S`` in CSR form, for ``S`` and for ``Sᵀ``.

    Parallel edges (same ``(row, col)``, e.g. two relations between the same entities) share one
    CSR entry whose value is the sum of theirs: CSR kernels and ``sampled_addmm`` want unique entries.

    Attributes:
        num_edges: ``E``, edges in the caller's order.
        shape: ``(n_rows, n_cols)``.
        slot: shape ``(E,)``, the CSR entry of each edge (entries are in row-major order).
        crow, col: CSR of ``S`` over the ``U <= E`` unique entries.
        order_t, crow_t, col_t: CSR of ``Sᵀ``; ``order_t`` permutes entries into its order.
    """

    num_edges: int
    shape: tuple[int, int]
    slot: Tensor
    crow: Tensor
    col: Tensor
    order_t: Tensor
    crow_t: Tensor
    col_t: Tensor

    @classmethod
    def build(cls, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> SparseStructure:
        """The structure of ``S`` with entries at ``(rows[e], cols[e])``, each shape ``(E,)`` int64."""
        n_rows, n_cols = shape
        keys, slot = torch.unique(rows * n_cols + cols, sorted=True, return_inverse=True)
        entry_rows, entry_cols = keys // n_cols, keys % n_cols
        order_t = torch.argsort(entry_cols * n_rows + entry_rows)
        return cls(
            num_edges=int(rows.numel()), shape=(n_rows, n_cols), slot=slot,
            crow=_crow(entry_rows, n_rows), col=entry_cols,
            order_t=order_t, crow_t=_crow(entry_cols, n_cols), col_t=entry_rows[order_t].contiguous(),
        )

    def entry_values(self, values: Tensor) -> Tensor:
        """Edge weights ``(E,)`` summed into the CSR entries ``(U,)``."""
        if len(self.col) == self.num_edges:  # no parallel edges: a permutation
            return values.new_empty(self.num_edges).index_copy_(0, self.slot, values)
        return values.new_zeros(len(self.col)).index_add_(0, self.slot, values)

    def matrix(self, values: Tensor, transposed: bool = False) -> Tensor:
        """``S`` (or ``Sᵀ``) as a CSR tensor with edge weights ``values`` (shape ``(E,)``, caller order)."""
        entries = self.entry_values(values)
        if transposed:
            crow, col, entries, shape = self.crow_t, self.col_t, entries[self.order_t], (self.shape[1], self.shape[0])
        else:
            crow, col, shape = self.crow, self.col, self.shape
        with warnings.catch_warnings():  # torch warns once that sparse CSR is "beta"; our use is covered by tests
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(crow, col, entries, shape, check_invariants=False)


def _crow(index: Tensor, n: int) -> Tensor:
    counts = torch.bincount(index, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


class _Propagate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, structure: SparseStructure) -> Tensor:  # noqa: ANN001
        ctx.structure = structure
        ctx.save_for_backward(values, x)
        return structure.matrix(values) @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # noqa: ANN001
        values, x = ctx.saved_tensors
        structure: SparseStructure = ctx.structure
        grad = grad.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = structure.matrix(values, transposed=True) @ grad
        if ctx.needs_input_grad[0]:
            pattern = structure.matrix(torch.ones_like(values))
            sampled = torch.sparse.sampled_addmm(pattern, grad, x.T.contiguous(), beta=0.0, alpha=1.0)
            grad_values = sampled.values()[structure.slot]
        return grad_values, grad_x, None


def propagate(structure: SparseStructure, values: Tensor, x: Tensor) -> Tensor:
    """``y_i = Σ_{e: rows_e = i} values_e · x_{cols_e}``, differentiable in ``values`` and ``x``.

    Args:
        structure: the edge pattern, shape ``(n_rows, n_cols)``.
        values: shape ``(E,)`` edge weights, in the order the structure was built from.
        x: shape ``(n_cols, d)``.

    Returns:
        shape ``(n_rows, d)``.
    """
    if values.shape != (structure.num_edges,):
        raise ValueError(f"propagate: values of shape {tuple(values.shape)}; expected ({structure.num_edges},)")
    if x.shape[0] != structure.shape[1]:
        raise ValueError(f"propagate: x has {x.shape[0]} rows; the structure has {structure.shape[1]} columns")
    return _Propagate.apply(values, x.contiguous(), structure)


def segment_softmax(logits: Tensor, index: Tensor, n: int) -> Tensor:
    """Softmax of ``logits`` over the entries sharing an ``index`` (e.g. the edges into one node).

    Args:
        logits: shape ``(E, k)``.
        index: shape ``(E,)`` int64 group of each entry, in ``[0, n)``.

    Returns:
        shape ``(E, k)``; each group's entries sum to 1 per column.
    """
    expanded = index.unsqueeze(1).expand_as(logits)
    peak = logits.new_full((n, logits.shape[1]), float("-inf"))
    peak = peak.scatter_reduce(0, expanded, logits.detach(), reduce="amax", include_self=True)
    weights = torch.exp(logits - peak[index])
    total = weights.new_zeros((n, logits.shape[1])).index_add(0, index, weights)
    return weights / total[index].clamp_min(1e-16)
