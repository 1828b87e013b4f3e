"""Factored (low-rank) layers: an entity table ``E = U · V`` and a linear map ``W = B · A``.

They stand in for ``nn.Embedding`` and ``nn.Linear`` and keep their interface (``weight``,
``forward``, ``bias``), so every scorer, regulariser and layer that reads ``weight`` works unchanged.
``kgedge.compress.lowrank`` fills them from a truncated SVD; a model built with
``ModelConfig.options["entity_rank"] = r`` has a :class:`LowRankEmbedding` entity table, so that a
compressed checkpoint rebuilds with ``build(config)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ENTITY_RANK = "entity_rank"  # the ModelConfig.options key of a factored entity table


def entity_rank(options: dict[str, object]) -> int | None:
    """The factored entity table's rank from ``ModelConfig.options``, or None for a dense table.

    Raises:
        ValueError: the rank is not a positive integer.
    """
    rank = options.get(ENTITY_RANK)
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"ModelConfig.options[{ENTITY_RANK!r}]={rank!r}; allowed: a positive integer")
    return rank


class LowRankEmbedding(nn.Module):
    """An embedding table stored as two factors: ``weight = u @ v``.

    ``u`` holds each row's coordinates in the basis ``v``. The exporter stores ``u`` as the (int8)
    table and ``v`` in float32; QAT fake-quantizes ``u``, the stored table.

    Args:
        num_embeddings: rows ``N``.
        embedding_dim: width ``W`` of a reconstructed row.
        rank: ``r``.
        init_scale: std of a dense table's entries that a fresh factored table imitates.

    Shapes:
        u: ``(N, r)``; v: ``(r, W)``; ``forward(ids)``: ``ids.shape + (W,)``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, init_scale: float = 1e-3) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.u = nn.Parameter(torch.empty(num_embeddings, rank))
        self.v = nn.Parameter(torch.empty(rank, embedding_dim))
        # v with orthonormal rows (as the SVD gives it) and u scaled so that rows of u @ v have the
        # norm of a dense table's rows: r · s² = W · init_scale²
        nn.init.orthogonal_(self.v)
        nn.init.normal_(self.u, std=init_scale * math.sqrt(embedding_dim / rank))

    @property
    def weight(self) -> Tensor:
        """The reconstructed table, shape ``(N, W)``."""
        return self.u @ self.v

    def forward(self, ids: Tensor) -> Tensor:
        return self.u[ids] @ self.v

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"


class LowRankLinear(nn.Module):
    """``y = x Aᵀ Bᵀ + b``: a linear map through ``r`` dimensions, ``weight = B · A``.

    Args:
        in_features, out_features: as ``nn.Linear``.
        rank: ``r``.
        bias: whether ``second`` carries the bias.

    Shapes:
        first.weight (A): ``(r, in)``; second.weight (B): ``(out, r)``; x: ``(..., in)`` -> ``(..., out)``.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    @property
    def weight(self) -> Tensor:
        """The product, shape ``(out, in)``, for layers that read ``linear.weight`` directly."""
        return self.second.weight @ self.first.weight

    @property
    def bias(self) -> Tensor | None:
        return self.second.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"
