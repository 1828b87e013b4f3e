"""Recommendation metrics for ``bought``-style relations: Recall@k and NDCG@k, seen items excluded."""

from __future__ import annotations

import numpy as np

from kgedge.data.kg import KnowledgeGraph, Split
from kgedge.evaluate.ranking import ScoreFn


def catalog(kg: KnowledgeGraph, relation: int) -> np.ndarray:
    """Entities that are tails of ``relation`` in train: the items one may recommend, shape ``(m,)``."""
    return np.unique(kg.train[kg.train[:, 1] == relation, 2])


def popularity_scorer(kg: KnowledgeGraph, relation: int) -> ScoreFn:
    """A baseline that scores every item by how often it is the tail of ``relation`` in train."""
    counts = np.bincount(kg.train[kg.train[:, 1] == relation, 2], minlength=kg.num_entities).astype(np.float64)

    def score(heads: np.ndarray, relations: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(heads), kg.num_entities))

    return score


def recommendation_metrics(
    score_fn: ScoreFn,
    kg: KnowledgeGraph,
    relation_name: str = "bought",
    split: Split = "test",
    k: int = 10,
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall@k and NDCG@k over users with ``relation_name`` triples in ``split``.

    Candidates are the relation's catalogue (its train tails); items the user already has in train
    or valid (other than the held-out ones) are excluded, as a recommender would.

    Raises:
        ValueError: the relation is unknown or has no triples in ``split``.
    """
    if relation_name not in kg.relation_ids:
        raise ValueError(f"relation {relation_name!r} not in the KG; relations: {', '.join(kg.relations)}")
    relation = kg.relation_ids[relation_name]
    held_out = kg.split(split)
    held_out = held_out[held_out[:, 1] == relation]
    if len(held_out) == 0:
        raise ValueError(f"relation {relation_name!r} has no triples in the {split} split")
    users, inverse = np.unique(held_out[:, 0], return_inverse=True)
    allowed = np.zeros(kg.num_entities, dtype=bool)
    allowed[catalog(kg, relation)] = True
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls, ndcgs = [], []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        raw = np.asarray(score_fn(batch, np.full(len(batch), relation)), dtype=np.float64)
        scores = np.where(allowed, raw, -np.inf)
        rows, tails = kg.known.lookup(batch, np.full(len(batch), relation))
        scores[rows, tails] = -np.inf  # every known item, the held-out ones restored below
        targets = [held_out[inverse == start + i, 2] for i in range(len(batch))]
        for i, items in enumerate(targets):
            scores[i, items] = raw[i, items]
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for i, items in enumerate(targets):
            hits = np.isin(top[i], items).astype(np.float64)
            recalls.append(hits.sum() / len(items))
            ideal = discounts[: min(len(items), k)].sum()
            ndcgs.append(float((hits * discounts).sum() / ideal))
    return {
        f"recall_at_{k}": float(np.mean(recalls)),
        f"ndcg_at_{k}": float(np.mean(ndcgs)),
        "num_users": int(len(users)),
    }
