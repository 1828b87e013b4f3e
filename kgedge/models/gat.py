"""GAT teacher (Veličković et al., 2018): multi-head graph attention, then a KG decoder.

Each layer projects ``z_i = W h_i`` and splits it into ``K`` heads of width ``W / K``. Head ``k``
attends over the edges into ``i`` and a self loop:

    e_{ij}^k = LeakyReLU(a_src^k · z_j^k + a_dst^k · z_i^k + b_{r(j→i)}^k)
    α_{ij}^k = softmax_j(e_{ij}^k)
    h_i'^k  = Σ_j α_{ij}^k z_j^k,        h_i' = [h_i'^1 | ... | h_i'^K] + bias

The per-relation bias ``b_r^k`` (one more row for the self loop) is the only departure from GAT: it
lets a head weigh a KG's relations differently at the cost of ``num_relations x K`` numbers. Heads
are concatenated in every layer, so the width stays ``W`` and the decoder sees the usual row width.

Shapes: node states ``(num_entities, W)`` with ``W`` the entity width (``2 * dim`` for complex decoders).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kgedge.models.graph_encoder import GraphEncoderModel, GraphOptions
from kgedge.models.message_passing import SparseStructure, propagate, segment_softmax


@dataclass(frozen=True)
class GATOptions(GraphOptions):
    """Attributes (besides :class:`GraphOptions`):
        num_heads: ``K``; the entity width must be a multiple of it.
        negative_slope: of the LeakyReLU on attention logits.
    """

    num_heads: int = 4
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_heads, int) or not 1 <= self.num_heads <= 64:
            raise ValueError(f"options.num_heads={self.num_heads!r}; allowed: an integer from 1 to 64")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ValueError(f"options.negative_slope={self.negative_slope!r}; allowed: [0, 1)")


@dataclass(frozen=True, eq=False)
class GATGraph:
    """Edges plus one self loop per node (``E' = E + N``), expanded over heads.

    Attributes:
        src, dst, rel: shape ``(E',)``; self loops have relation id ``num_relations``.
        structure: ``(N * K, N * K)``, entry ``(dst * K + k, src * K + k)`` for edge and head ``k``.
    """

    src: Tensor
    dst: Tensor
    rel: Tensor
    structure: SparseStructure


class GATLayer(nn.Module):
    """One multi-head attention layer ``(N, W) -> (N, W)``.

    Args:
        width: node state width ``W`` (a multiple of ``num_heads``).
        num_relations: relation ids including reciprocals (a self-loop id is added).
        num_heads: ``K``.
        negative_slope: LeakyReLU slope of the attention logits.
    """

    def __init__(self, width: int, num_relations: int, num_heads: int, negative_slope: float) -> None:
        super().__init__()
        self.num_heads, self.negative_slope = num_heads, negative_slope
        self.linear = nn.Linear(width, width, bias=False)
        self.att_src = nn.Parameter(torch.empty(num_heads, width // num_heads))
        self.att_dst = nn.Parameter(torch.empty(num_heads, width // num_heads))
        self.relation_bias = nn.Parameter(torch.zeros(num_relations + 1, num_heads))
        self.bias = nn.Parameter(torch.zeros(width))
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)

    def forward(self, x: Tensor, graph: GATGraph) -> Tensor:
        n, width = x.shape
        z = self.linear(x).view(n, self.num_heads, width // self.num_heads)  # (N, K, W / K)
        score_src = (z * self.att_src).sum(-1)  # (N, K)
        score_dst = (z * self.att_dst).sum(-1)
        logits = score_src[graph.src] + score_dst[graph.dst] + self.relation_bias[graph.rel]  # (E', K)
        alpha = segment_softmax(F.leaky_relu(logits, self.negative_slope), graph.dst, n)
        out = propagate(graph.structure, alpha.reshape(-1), z.reshape(n * self.num_heads, -1))
        return out.reshape(n, width) + self.bias


class GAT(GraphEncoderModel):
    options_class = GATOptions

    def make_layer(self, index: int) -> nn.Module:
        opts: GATOptions = self.opts  # type: ignore[assignment]
        if self.entity_width % opts.num_heads:
            raise ValueError(
                f"GAT: the entity width {self.entity_width} (dim={self.config.dim}) is not a multiple of "
                f"options.num_heads={opts.num_heads}; choose a dim divisible by it"
            )
        return GATLayer(self.entity_width, self.config.num_relations, opts.num_heads, opts.negative_slope)

    def make_graph(self, src: Tensor, dst: Tensor, rel: Tensor, num_nodes: int | None = None) -> GATGraph:
        n, heads = (num_nodes or self.config.num_entities), self.opts.num_heads  # type: ignore[attr-defined]
        loops = torch.arange(n, device=src.device)
        src = torch.cat([src, loops])
        dst = torch.cat([dst, loops])
        rel = torch.cat([rel, torch.full_like(loops, self.config.num_relations)])
        head = torch.arange(heads, device=src.device)
        rows = (dst.unsqueeze(1) * heads + head).reshape(-1)
        cols = (src.unsqueeze(1) * heads + head).reshape(-1)
        return GATGraph(src=src, dst=dst, rel=rel, structure=SparseStructure.build(rows, cols, (n * heads, n * heads)))
