"""Neighbour sampling for graph encoders: the subgraph a mini-batch needs, GraphSAGE-style.

Full-graph encoding costs every entity every step. With negative sampling a step needs the encoded
rows of a few thousand entities only, so each layer's messages are drawn from at most ``fanout``
in-edges per node (Hamilton et al., 2017): a target's ``L``-layer output depends on a sampled
``L``-hop tree, and the layers run on that subgraph alone. Nodes with no more in-edges than the
fanout keep all of them. Normalisations (GCN degrees, R-GCN relation counts, GAT softmax) are the
layers' own, computed on the subgraph, as PyTorch Geometric's ``NeighborLoader`` does; evaluation and
export encode the full graph.

Randomness comes from torch's global generator, which the trainer seeds: runs repeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class Subgraph:
    """A sampled subgraph in local numbering.

    Attributes:
        nodes: shape ``(n,)`` global ids; the first ``num_targets`` are the targets, in the order given.
        src, dst, rel: shape ``(e,)`` local endpoints and relation of each sampled edge (``src -> dst``).
        num_targets: how many targets lead ``nodes``.
    """

    nodes: Tensor
    src: Tensor
    dst: Tensor
    rel: Tensor
    num_targets: int


class NeighbourSampler:
    """Samples in-edges per node from a graph stored as ``edge_index`` ``(2, E)`` (rows source, destination).

    Args:
        edge_index: shape ``(2, E)`` int64.
        edge_type: shape ``(E,)`` int64.
        num_nodes: ``N``.
    """

    def __init__(self, edge_index: Tensor, edge_type: Tensor, num_nodes: int) -> None:
        dst = edge_index[1]
        order = torch.argsort(dst, stable=True)
        self.src = edge_index[0][order].contiguous()
        self.rel = edge_type[order].contiguous()
        counts = torch.bincount(dst, minlength=num_nodes)
        self.offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.num_nodes = num_nodes

    def in_edges(self, nodes: Tensor, fanout: int) -> tuple[Tensor, Tensor]:
        """Sampled in-edges of ``nodes``: ``(positions into the sorted edges, destination node)``.

        A node with at most ``fanout`` in-edges keeps all of them; a busier one gets ``fanout``
        draws with replacement, duplicates removed (so between 1 and ``fanout`` distinct edges).
        """
        start, degree = self.offsets[nodes], self.offsets[nodes + 1] - self.offsets[nodes]
        small = degree <= fanout
        # every edge of the small nodes: ranges start..start+degree, flattened
        counts = degree[small]
        owners = torch.repeat_interleave(nodes[small], counts)
        within = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        all_pos = torch.repeat_interleave(start[small], counts) + within
        # fanout random draws for the others
        big_nodes, big_start, big_degree = nodes[~small], start[~small], degree[~small]
        draws = (torch.rand(len(big_nodes), fanout) * big_degree.unsqueeze(1)).long()
        picked = (big_start.unsqueeze(1) + draws.clamp_max(big_degree.unsqueeze(1) - 1)).reshape(-1)
        picked = torch.unique(picked)  # positions are grouped by destination: unique keeps that
        owner_of_picked = torch.searchsorted(self.offsets, picked, right=True) - 1
        return torch.cat([all_pos, picked]), torch.cat([owners, owner_of_picked])

    def sample(self, targets: Tensor, fanouts: Sequence[int]) -> Subgraph:
        """The subgraph that ``len(fanouts)`` layers need to encode ``targets`` (unique global ids).

        ``fanouts[0]`` applies to the targets' own in-edges (the last layer), ``fanouts[1]`` to their
        neighbours', and so on.
        """
        local = torch.full((self.num_nodes,), -1, dtype=torch.long)
        local[targets] = torch.arange(len(targets))
        nodes, frontier = [targets], targets
        positions, owners = [], []
        count = len(targets)
        for fanout in fanouts:
            if len(frontier) == 0:
                break
            pos, owner = self.in_edges(frontier, int(fanout))
            positions.append(pos)
            owners.append(owner)
            sources = torch.unique(self.src[pos])
            new = sources[local[sources] < 0]
            local[new] = torch.arange(count, count + len(new))
            count += len(new)
            nodes.append(new)
            frontier = new
        pos, owner = (torch.cat(positions), torch.cat(owners)) if positions else (targets[:0], targets[:0])
        return Subgraph(nodes=torch.cat(nodes), src=local[self.src[pos]], dst=local[owner], rel=self.rel[pos],
                        num_targets=len(targets))
