"""The entity graph of a KG: relations dropped, edges undirected, as CSR arrays (numpy only).

Lightweight embeddings (random walks, matrix factorisation) see a KG as who-is-linked-to-whom; the
relation-aware scorer fitted afterwards (:mod:`kgedge.embed.scorer`) puts the relations back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kgedge.data.kg import KnowledgeGraph


@dataclass(frozen=True, eq=False)
class EntityGraph:
    """Undirected simple graph over entity ids.

    Attributes:
        num_nodes: entities.
        indptr: shape ``(num_nodes + 1,)`` int64; the neighbours of ``v`` are ``indices[indptr[v]:indptr[v+1]]``.
        indices: shape ``(2 * num_undirected_edges,)`` int64, sorted within each row.
        weights: shape like ``indices``: how many triples (any relation, either direction) link the pair.
        keys: shape like ``indices``, ``row * num_nodes + col`` ascending (for :meth:`has_edge`).
    """

    num_nodes: int
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray
    keys: np.ndarray

    @classmethod
    def of(cls, kg: KnowledgeGraph) -> EntityGraph:
        """The graph of ``kg.train`` (self loops dropped, parallel triples counted in ``weights``)."""
        return cls.from_edges(kg.train[:, 0], kg.train[:, 2], kg.num_entities)

    @classmethod
    def from_edges(cls, heads: np.ndarray, tails: np.ndarray, num_nodes: int) -> EntityGraph:
        """From edge lists ``heads``/``tails`` of shape ``(m,)``, read as undirected."""
        keep = heads != tails
        src = np.concatenate([heads[keep], tails[keep]]).astype(np.int64)
        dst = np.concatenate([tails[keep], heads[keep]]).astype(np.int64)
        keys, counts = np.unique(src * num_nodes + dst, return_counts=True)  # sorted: row-major CSR order
        rows, cols = keys // num_nodes, keys % num_nodes
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_nodes))]).astype(np.int64)
        return cls(num_nodes=num_nodes, indptr=indptr, indices=cols, weights=counts.astype(np.float64), keys=keys)

    @property
    def degrees(self) -> np.ndarray:
        """Neighbours per node, shape ``(num_nodes,)``."""
        return np.diff(self.indptr)

    def neighbours(self, node: int) -> np.ndarray:
        return self.indices[self.indptr[node] : self.indptr[node + 1]]

    def has_edge(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Whether ``a[i]`` and ``b[i]`` are adjacent, shape like ``a`` (vectorised binary search)."""
        keys = self.keys
        query = np.asarray(a, dtype=np.int64) * self.num_nodes + np.asarray(b, dtype=np.int64)
        if len(keys) == 0:
            return np.zeros(query.shape, dtype=bool)
        found = np.searchsorted(keys, query)
        return (found < len(keys)) & (keys[np.minimum(found, len(keys) - 1)] == query)

    def adjacency(self, weighted: bool = False) -> sp.csr_matrix:
        """The symmetric adjacency, shape ``(num_nodes, num_nodes)``; 0/1 unless ``weighted``."""
        data = self.weights if weighted else np.ones_like(self.weights)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.num_nodes, self.num_nodes))
