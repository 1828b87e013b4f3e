"""Tests for kgedge.evaluate: filtered realistic ranks against brute force, metrics, recommendation."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kgedge.data.index import KnownTails
from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.evaluate import (
    evaluate_link_prediction,
    filtered_ranks,
    popularity_scorer,
    rank_metrics,
    recommendation_metrics,
)

WriteKG = Callable[..., Path]  # the write_kg fixture of conftest.py


def _table_scorer(table: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Scores looked up per query row: ``table[(h, r)]`` must be set for every query asked."""
    return lambda h, r: table[np.asarray(h), np.asarray(r)]


def _brute_force_rank(row: np.ndarray, target: int, known: set[int]) -> float:
    """The definition: candidates are the target and every entity that is not another known tail."""
    s = row[target]
    if math.isnan(s):
        return float(len(row))
    others = [row[e] for e in range(len(row)) if e != target and e not in known]
    better = sum(1 for x in others if x > s)
    tied = sum(1 for x in others if x == s)
    return 1.0 + better + tied / 2.0


@pytest.mark.parametrize("seed", range(6))
def test_filtered_ranks_equal_brute_force_with_ties_nan_and_infinities(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_entities, num_relations = 15, 3
    # few distinct values, so that ties are common; NaN and both infinities sprinkled in
    values = np.array([0.0, 1.0, 1.0, 2.0, 2.5, np.nan, -np.inf, np.inf])
    table = rng.choice(values, size=(num_entities, num_relations, num_entities), p=[.25, .2, .2, .1, .1, .05, .05, .05])
    known_triples = np.unique(rng.integers(0, [num_entities, num_relations, num_entities], size=(120, 3)), axis=0)
    queries = known_triples[rng.choice(len(known_triples), 40, replace=False)]
    queries = np.concatenate([queries, rng.integers(0, [num_entities, num_relations, num_entities], size=(10, 3))])
    known_sets: dict[tuple[int, int], set[int]] = defaultdict(set)
    for h, r, t in known_triples.tolist():
        known_sets[(h, r)].add(t)

    ranks = filtered_ranks(_table_scorer(table), queries, KnownTails(known_triples, num_relations), batch_size=7)
    expected = [_brute_force_rank(table[h, r], t, known_sets[(h, r)]) for h, r, t in queries.tolist()]
    np.testing.assert_array_equal(ranks, expected)


def test_filtering_removes_other_known_tails_but_not_the_target() -> None:
    table = np.zeros((1, 1, 5))
    table[0, 0] = [5.0, 4.0, 3.0, 3.0, 1.0]
    known = KnownTails(np.array([[0, 0, 0], [0, 0, 2], [0, 0, 3]]), 1)
    score = _table_scorer(table)
    # target 2: entity 0 is another known tail (gone), entity 1 is better, entity 3 (tie) is known (gone)
    assert filtered_ranks(score, np.array([[0, 0, 2]]), known).tolist() == [2.0]
    # unfiltered, the same target is 1 + 2 better + 1 tie / 2
    assert filtered_ranks(score, np.array([[0, 0, 2]]), KnownTails(np.zeros((0, 3)), 1)).tolist() == [3.5]
    # the target is ranked even though it is itself a known tail
    assert filtered_ranks(score, np.array([[0, 0, 0]]), known).tolist() == [1.0]


def test_filtered_tails_do_not_tie_with_a_minus_infinity_target() -> None:
    table = np.full((1, 1, 4), -np.inf)
    table[0, 0, 1] = 0.0
    known = KnownTails(np.array([[0, 0, 2], [0, 0, 3]]), 1)
    # candidates: the target (entity 0) and entity 1, which is better; 2 and 3 are filtered out
    assert filtered_ranks(_table_scorer(table), np.array([[0, 0, 0]]), known).tolist() == [2.0]


def test_constant_scores_give_the_middle_rank_and_nan_the_worst() -> None:
    num_entities = 9
    flat = np.zeros((2, 1, num_entities))
    flat[1, 0, 4] = np.nan
    queries = np.array([[0, 0, 4], [1, 0, 4], [1, 0, 5]])
    ranks = filtered_ranks(_table_scorer(flat), queries, KnownTails(np.zeros((0, 3)), 1))
    # all tied: 1 + 8 / 2; NaN target: worst; a NaN competitor is neither better nor tied: 1 + 7 / 2
    assert ranks.tolist() == [5.0, float(num_entities), 4.5]


def test_filtered_ranks_accept_read_only_float32_scores_and_report_progress() -> None:
    row = np.arange(6, dtype=np.float32)
    scorer = lambda h, r: np.broadcast_to(row, (len(h), 6))  # noqa: E731
    seen: list[int] = []
    ranks = filtered_ranks(scorer, np.array([[0, 0, 5], [0, 0, 0], [1, 0, 3]]), KnownTails(np.zeros((0, 3)), 1),
                           batch_size=2, progress=seen.append)
    assert ranks.tolist() == [1.0, 6.0, 3.0]
    assert seen == [2, 1]


def test_rank_metrics_follow_their_definitions() -> None:
    ranks = np.array([1.0, 2.0, 3.5, 10.0, 11.0, 1.5])
    metrics = rank_metrics(ranks)
    assert metrics["mrr"] == pytest.approx(sum(1 / r for r in ranks) / len(ranks))
    for k in (1, 3, 10):
        assert metrics[f"hits_at_{k}"] == pytest.approx(sum(r <= k for r in ranks) / len(ranks))
    assert metrics["num_queries"] == 6
    assert rank_metrics(np.array([]))["mrr"] == 0.0


# A tiny shop: u1..u3 buy items i1..i6; "viewed" adds a non-catalogue tail (page) and a seen item.
TRAIN = [
    ("u1", "bought", "i1"), ("u1", "bought", "i2"), ("u2", "bought", "i2"), ("u2", "bought", "i3"),
    ("u3", "bought", "i4"), ("u3", "bought", "i5"), ("u3", "bought", "i6"), ("u1", "viewed", "page"),
    ("u2", "viewed", "i6"),
]
VALID = [("u1", "bought", "i6"), ("u3", "bought", "i1")]
TEST = [("u1", "bought", "i3"), ("u1", "bought", "i4"), ("u2", "bought", "i1"), ("u2", "viewed", "i5")]


@pytest.fixture
def shop(write_kg: WriteKG) -> KnowledgeGraph:
    return load_kg(write_kg(TRAIN, VALID, TEST, name="shop"))


def _expected_recommendation(
    kg: KnowledgeGraph, scores: dict[str, dict[str, float]], k: int
) -> tuple[float, float, int]:
    """Recall@k and NDCG@k from the definitions, on names."""
    catalogue = {t for _, r, t in TRAIN if r == "bought"}
    recalls, ndcgs = [], []
    users = sorted({h for h, r, _ in TEST if r == "bought"})
    for user in users:
        held = {t for h, r, t in TEST if h == user and r == "bought"}
        owned = {t for h, r, t in TRAIN + VALID if h == user and r == "bought"}
        candidates = sorted((catalogue - owned) | held, key=lambda e: (-scores[user][e], kg.entity_ids[e]))
        top = candidates[:k]
        recalls.append(len(held & set(top)) / len(held))
        dcg = sum(1 / math.log2(i + 2) for i, e in enumerate(top) if e in held)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(held), k)))
        ndcgs.append(dcg / ideal)
    return sum(recalls) / len(recalls), sum(ndcgs) / len(ndcgs), len(users)


def _scorer_from(kg: KnowledgeGraph, scores: dict[str, dict[str, float]]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    table = np.zeros((kg.num_entities, kg.num_entities))
    for user, row in scores.items():
        for entity, value in row.items():
            table[kg.entity_ids[user], kg.entity_ids[entity]] = value
    return lambda h, r: table[np.asarray(h)]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_recommendation_metrics_on_a_hand_made_case(shop: KnowledgeGraph, k: int) -> None:
    # Seen items (i1, i2, i6 for u1) and non-items (page, users) score highest: they must be skipped.
    scores = {
        "u1": {"i1": 9, "i2": 9, "i6": 9, "page": 9, "u2": 9, "i5": 3, "i4": 2, "i3": 1},
        "u2": {"i2": 9, "i3": 9, "i6": 8, "i4": 4, "i5": 4, "i1": 2},
    }
    expected_recall, expected_ndcg, users = _expected_recommendation(shop, scores, k)
    got = recommendation_metrics(_scorer_from(shop, scores), shop, "bought", "test", k=k)
    assert got == {f"recall_at_{k}": pytest.approx(expected_recall), f"ndcg_at_{k}": pytest.approx(expected_ndcg),
                   "num_users": users}


def test_recommendation_excludes_seen_items(shop: KnowledgeGraph) -> None:
    # u1's held-out i3 and i4 rank right after the items u1 already has
    scores = {"u1": {"i1": 9, "i2": 8, "i6": 7, "i3": 5, "i4": 4}, "u2": {"i1": 9, "i2": 8, "i3": 7}}
    got = recommendation_metrics(_scorer_from(shop, scores), shop, "bought", "test", k=2)
    assert got["recall_at_2"] == 1.0 and got["ndcg_at_2"] == pytest.approx(1.0)


def test_recommendation_errors(shop: KnowledgeGraph) -> None:
    scorer = _scorer_from(shop, {})
    with pytest.raises(ValueError, match="relation 'sold' not in the KG; relations: bought, viewed"):
        recommendation_metrics(scorer, shop, "sold")
    with pytest.raises(ValueError, match="'viewed' has no triples in the valid split"):
        recommendation_metrics(scorer, shop, "viewed", "valid")


def test_popularity_scorer_counts_train_tails(shop: KnowledgeGraph) -> None:
    bought = shop.relation_ids["bought"]
    scores = popularity_scorer(shop, bought)(np.array([0, 1, 2]), np.full(3, bought))
    counts = Counter(t for _, r, t in TRAIN if r == "bought")
    expected = [counts.get(e, 0) for e in shop.entities]
    assert scores.shape == (3, shop.num_entities)
    for row in scores:
        assert row.tolist() == expected


def test_popularity_baseline_recommendation(shop: KnowledgeGraph) -> None:
    bought = shop.relation_ids["bought"]
    counts = Counter(t for _, r, t in TRAIN if r == "bought")
    scores = {u: {e: float(counts.get(e, 0)) for e in shop.entities} for u in ("u1", "u2")}
    expected_recall, expected_ndcg, _ = _expected_recommendation(shop, scores, 3)
    got = recommendation_metrics(popularity_scorer(shop, bought), shop, "bought", "test", k=3)
    assert got["recall_at_3"] == pytest.approx(expected_recall)
    assert got["ndcg_at_3"] == pytest.approx(expected_ndcg)


def test_evaluate_link_prediction_ranks_both_directions(shop: KnowledgeGraph) -> None:
    rng = np.random.default_rng(0)
    table = rng.integers(0, 3, size=(shop.num_entities, 2 * shop.num_relations, shop.num_entities)).astype(float)
    metrics = evaluate_link_prediction(_table_scorer(table), shop, "test")
    triples = shop.test
    queries = shop.with_reciprocals(triples)
    known = defaultdict(set)
    for h, r, t in shop.with_reciprocals(np.concatenate([shop.train, shop.valid, shop.test])).tolist():
        known[(h, r)].add(t)
    ranks = [_brute_force_rank(table[h, r], t, known[(h, r)]) for h, r, t in queries.tolist()]
    n = len(triples)
    assert metrics["num_queries"] == 2 * n
    assert metrics["mrr"] == pytest.approx(np.mean(1 / np.array(ranks)))
    assert metrics["mrr_tail"] == pytest.approx(np.mean(1 / np.array(ranks[:n])))
    assert metrics["mrr_head"] == pytest.approx(np.mean(1 / np.array(ranks[n:])))
    assert evaluate_link_prediction(_table_scorer(table), shop, "test", max_triples=2)["num_queries"] == 4
