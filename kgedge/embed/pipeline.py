"""Embed a KG end to end: entity graph → lightweight embedding → fitted relations → ``distmult`` checkpoint.

``METHODS`` is the registry behind ``kgedge embed --method``: a plain dict from a name to a function
``(graph, dim, seed) -> (table (num_entities, dim), details)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from kgedge.data.kg import KnowledgeGraph
from kgedge.embed.entity_graph import EntityGraph
from kgedge.embed.matrix_factorization import MFConfig, mf_embedding
from kgedge.embed.random_walk import RandomWalkConfig, random_walk_embedding
from kgedge.embed.scorer import ScorerConfig, ScorerFit, fit_relation_scorer
from kgedge.models.base import KGModel
from kgedge.train.checkpoint import Vocabulary, save_checkpoint

log = logging.getLogger(__name__)

# (graph, dim, seed) -> (table (num_entities, dim), JSON-able details)
EmbedFn = Callable[[EntityGraph, int, int], tuple[Tensor, dict[str, object]]]

# node2vec's defaults lean outward (q < 1): neighbourhoods of shared interest, what recommendation wants
NODE2VEC_P, NODE2VEC_Q = 1.0, 0.5


def _walk(p: float, q: float) -> EmbedFn:
    def embed(graph: EntityGraph, dim: int, seed: int) -> tuple[Tensor, dict[str, object]]:
        config = RandomWalkConfig(dim=dim, p=p, q=q, seed=seed)
        result = random_walk_embedding(graph, config)
        return result.table, {"walk_config": config.__dict__, "num_walks": result.num_walks,
                              "num_pairs": result.num_pairs, "final_loss": result.final_loss}

    return embed


def _mf(graph: EntityGraph, dim: int, seed: int) -> tuple[Tensor, dict[str, object]]:
    config = MFConfig(num_factors=dim, seed=seed)
    result = mf_embedding(graph, config)
    return result.table, {"mf_config": config.__dict__, "matrix_nnz": result.matrix_nnz}


METHODS: dict[str, EmbedFn] = {
    "deepwalk": _walk(1.0, 1.0),
    "node2vec": _walk(NODE2VEC_P, NODE2VEC_Q),
    "mf": _mf,
}


def resolve_method(name: str) -> EmbedFn:
    """The embedding method registered as ``name``; lists the valid names on error."""
    try:
        return METHODS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown embedding method {name!r}; choose one of {', '.join(METHODS)}") from None


@dataclass
class EmbedResult:
    """What :func:`embed_kg` produced.

    Attributes:
        model: the fitted ``distmult`` model (eval mode).
        fit: the relation fit (validation metrics, whether fine-tuning was kept).
        embed_seconds: wall time of the embedding (walks + skip-gram, or matrix + SVD).
        details: method-specific figures (walks, pairs, non-zeros) and settings.
    """

    method: str
    dim: int
    model: KGModel
    fit: ScorerFit
    embed_seconds: float
    details: dict[str, object] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return self.embed_seconds + self.fit.seconds


def embed_kg(
    kg: KnowledgeGraph,
    method: str,
    dim: int = 128,
    seed: int = 0,
    scorer: ScorerConfig | None = None,
    out: Path | None = None,
) -> EmbedResult:
    """Embed ``kg``'s entity graph with ``method``, fit DistMult relations on it, write ``out`` if given.

    The checkpoint is a plain ``distmult`` checkpoint (its metadata records the method and timings).
    """
    embed = resolve_method(method)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim={dim!r}; allowed: a positive integer")
    started = time.perf_counter()
    table, details = embed(EntityGraph.of(kg), dim, seed)
    embed_seconds = time.perf_counter() - started
    fit = fit_relation_scorer(kg, table, scorer)
    result = EmbedResult(method.lower(), dim, fit.model, fit, embed_seconds, details)
    if out is not None:
        metadata = {
            "data": kg.name, "train_config": fit.train_config.to_dict(), "valid": fit.valid,
            "embedding": {"method": result.method, "dim": dim, "seed": seed, "embed_seconds": embed_seconds,
                          "fit_seconds": fit.seconds, "fine_tuned": fit.fine_tuned, **details},
        }
        save_checkpoint(Path(out), fit.model, Vocabulary.of(kg), metadata)
        log.info("wrote %s (%s, dim %d) to %s", "distmult", result.method, dim, out)
    return result
