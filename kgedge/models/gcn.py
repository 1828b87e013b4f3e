"""GCN teacher (Kipf & Welling, 2017): relation-agnostic graph convolutions, then a KG decoder.

Each layer is

    H' = D̂^{-1/2} (A + I) D̂^{-1/2} H W + b

with ``A`` the adjacency of the training graph with reciprocal edges (so symmetric; parallel edges of
different relations count once each) and ``D̂`` the degrees of ``A + I``. Relations enter only
through the decoder (:mod:`kgedge.models.decoders`), which makes GCN the cheapest encoder: one sparse
product and one ``W x W`` matrix per layer.

Shapes: node states ``(num_entities, W)`` with ``W`` the entity width (``2 * dim`` for complex decoders).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kgedge.models.graph_encoder import GraphEncoderModel, GraphOptions
from kgedge.models.message_passing import SparseStructure, propagate


@dataclass(frozen=True, eq=False)
class GCNGraph:
    """The normalised adjacency: ``structure`` with ``edge_weight`` ``(E,)``, and ``self_weight`` ``(N, 1)``."""

    structure: SparseStructure
    edge_weight: Tensor
    self_weight: Tensor


class GCNLayer(nn.Module):
    """One graph convolution ``(N, W) -> (N, W)``.

    Args:
        width: node state width ``W``.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, graph: GCNGraph) -> Tensor:
        h = x @ self.linear.weight.T
        out = propagate(graph.structure, graph.edge_weight, h) + graph.self_weight * h
        return out + self.linear.bias


class GCN(GraphEncoderModel):
    options_class = GraphOptions

    def make_layer(self, index: int) -> nn.Module:
        return GCNLayer(self.entity_width)

    def make_graph(self, src: Tensor, dst: Tensor, rel: Tensor, num_nodes: int | None = None) -> GCNGraph:
        n = (num_nodes or self.config.num_entities)
        degree = torch.bincount(dst, minlength=n).to(torch.float32) + 1.0  # + the self loop
        inv_sqrt = degree.rsqrt()
        return GCNGraph(
            structure=SparseStructure.build(dst, src, (n, n)),
            edge_weight=inv_sqrt[dst] * inv_sqrt[src],
            self_weight=(1.0 / degree).unsqueeze(1),
        )
