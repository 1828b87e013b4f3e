"""Lightweight embeddings: random walks (DeepWalk, node2vec) and matrix factorisation of the entity
graph, with DistMult relations fitted on top so that each result is a plain ``distmult`` checkpoint.

Stage: after ``train`` (the relation fit reuses the trainer), before ``compress`` and ``export``.
"""

from kgedge.embed.entity_graph import EntityGraph
from kgedge.embed.matrix_factorization import MFConfig, MFEmbedding, mf_embedding
from kgedge.embed.pipeline import METHODS, EmbedResult, embed_kg, resolve_method
from kgedge.embed.random_walk import RandomWalkConfig, WalkEmbedding, random_walk_embedding, random_walks
from kgedge.embed.scorer import ScorerConfig, ScorerFit, fit_relation_scorer, scorer_model

__all__ = [
    "METHODS",
    "EmbedResult",
    "EntityGraph",
    "MFConfig",
    "MFEmbedding",
    "RandomWalkConfig",
    "ScorerConfig",
    "ScorerFit",
    "WalkEmbedding",
    "embed_kg",
    "fit_relation_scorer",
    "mf_embedding",
    "random_walk_embedding",
    "random_walks",
    "resolve_method",
    "scorer_model",
]
