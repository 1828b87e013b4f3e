"""R-GCN teacher (Schlichtkrull et al., 2018): relation-specific convolutions, then a KG decoder.

Each layer is

    h_i' = W_0 h_i + Σ_r Σ_{j ∈ N_i^r} (1 / c_{i,r}) W_r h_j + b,    W_r = Σ_b a_{r,b} V_b

with ``N_i^r`` the sources of the edges of relation ``r`` into ``i`` (reciprocal relations are
relations of their own), ``c_{i,r} = |N_i^r|``, and the basis decomposition sharing ``B`` matrices
``V_b`` between all relations (``num_relations x B`` coefficients instead of ``num_relations`` full
matrices). The layer transforms first, ``P_b = H V_b`` (``N x W x B W``), then aggregates all bases in
one sparse product over ``E x B`` entries whose weights ``a_{r,b} / c_{i,r}`` are learned through
:func:`~kgedge.models.message_passing.propagate`.

Shapes: node states ``(num_entities, W)`` with ``W`` the entity width (``2 * dim`` for complex decoders).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kgedge.models.graph_encoder import GraphEncoderModel, GraphOptions
from kgedge.models.message_passing import SparseStructure, propagate


@dataclass(frozen=True)
class RGCNOptions(GraphOptions):
    """Attributes (besides :class:`GraphOptions`):
        num_bases: ``B``, matrices shared by all relations; cost grows linearly with it.
    """

    num_bases: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_bases, int) or not 1 <= self.num_bases <= 64:
            raise ValueError(f"options.num_bases={self.num_bases!r}; allowed: an integer from 1 to 64")


@dataclass(frozen=True, eq=False)
class RGCNGraph:
    """Edges expanded over the bases: ``structure`` ``(N, N * B)``, relation ids and ``1 / c_{i,r}`` per edge ``(E,)``."""

    structure: SparseStructure
    edge_type: Tensor
    edge_norm: Tensor


class RGCNLayer(nn.Module):
    """One relational convolution ``(N, W) -> (N, W)``.

    Args:
        width: node state width ``W``.
        num_relations: relation ids including reciprocals.
        num_bases: ``B``.
    """

    def __init__(self, width: int, num_relations: int, num_bases: int) -> None:
        super().__init__()
        self.bases = nn.Parameter(torch.empty(num_bases, width, width))
        self.coefficients = nn.Parameter(torch.empty(num_relations, num_bases))
        self.root = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.bases)
        nn.init.xavier_uniform_(self.coefficients)
        nn.init.xavier_uniform_(self.root.weight)
        nn.init.zeros_(self.root.bias)

    def forward(self, x: Tensor, graph: RGCNGraph) -> Tensor:
        width = self.bases.shape[2]
        projected = torch.einsum("nw,bwo->nbo", x, self.bases).reshape(-1, width)  # (N * B, W)
        weights = (self.coefficients[graph.edge_type] * graph.edge_norm.unsqueeze(1)).reshape(-1)  # (E * B,)
        return propagate(graph.structure, weights, projected) + self.root(x)


class RGCN(GraphEncoderModel):
    options_class = RGCNOptions

    def make_layer(self, index: int) -> nn.Module:
        opts: RGCNOptions = self.opts  # type: ignore[assignment]
        return RGCNLayer(self.entity_width, self.config.num_relations, opts.num_bases)

    def make_graph(self, src: Tensor, dst: Tensor, rel: Tensor, num_nodes: int | None = None) -> RGCNGraph:
        n, num_bases = (num_nodes or self.config.num_entities), self.opts.num_bases  # type: ignore[attr-defined]
        group = dst * self.config.num_relations + rel
        _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
        basis = torch.arange(num_bases, device=src.device)
        rows = dst.repeat_interleave(num_bases)
        cols = (src.unsqueeze(1) * num_bases + basis).reshape(-1)
        return RGCNGraph(
            structure=SparseStructure.build(rows, cols, (n, n * num_bases)),
            edge_type=rel,
            edge_norm=1.0 / counts[inverse].to(torch.float32),
        )
