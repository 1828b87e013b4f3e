"""Tests for kgedge.data.index.KnownTails against a brute-force dict of sets."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kgedge.data.index import KnownTails


def _brute_force(triples: np.ndarray) -> dict[tuple[int, int], set[int]]:
    known: dict[tuple[int, int], set[int]] = defaultdict(set)
    for h, r, t in triples.tolist():
        known[(h, r)].add(t)
    return known


@st.composite
def _case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    num_entities = draw(st.integers(1, 12))
    num_relations = draw(st.integers(1, 4))
    ids = st.tuples(st.integers(0, num_entities - 1), st.integers(0, num_relations - 1), st.integers(0, num_entities - 1))
    triples = np.array(draw(st.lists(ids, max_size=60)), dtype=np.int64).reshape(-1, 3)
    queries = draw(st.lists(st.tuples(st.integers(0, num_entities - 1), st.integers(0, num_relations - 1)), max_size=20))
    q = np.array(queries, dtype=np.int64).reshape(-1, 2)
    return triples, q[:, 0], q[:, 1], num_relations


@settings(max_examples=100, deadline=None)
@given(case=_case())
def test_lookup_equals_brute_force(case: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> None:
    triples, heads, relations, num_relations = case
    index = KnownTails(triples, num_relations)
    expected = _brute_force(triples)
    rows, tails = index.lookup(heads, relations)
    assert rows.shape == tails.shape
    assert np.all(np.diff(rows) >= 0)  # grouped by query, in query order
    for i, (h, r) in enumerate(zip(heads.tolist(), relations.tolist())):
        got = tails[rows == i]
        assert set(got.tolist()) == expected.get((h, r), set())
        assert np.all(np.diff(got) >= 0)  # sorted
        np.testing.assert_array_equal(np.unique(index.tails_of(h, r)), sorted(expected.get((h, r), set())))
    assert len(index) == len(triples)


def test_lookup_on_many_random_triples_with_unique_rows() -> None:
    rng = np.random.default_rng(7)
    num_entities, num_relations = 300, 6
    triples = np.unique(rng.integers(0, [num_entities, num_relations, num_entities], size=(5000, 3)), axis=0)
    triples = triples[rng.permutation(len(triples))]
    index = KnownTails(triples, num_relations)
    expected = _brute_force(triples)
    heads = rng.integers(0, num_entities, 500)
    relations = rng.integers(0, num_relations, 500)
    rows, tails = index.lookup(heads, relations)
    for i, (h, r) in enumerate(zip(heads.tolist(), relations.tolist())):
        assert tails[rows == i].tolist() == sorted(expected.get((h, r), set()))


def test_empty_index_knows_nothing() -> None:
    index = KnownTails(np.zeros((0, 3), dtype=np.int64), 4)
    rows, tails = index.lookup(np.array([0, 3]), np.array([1, 2]))
    assert rows.size == 0 and tails.size == 0
    assert index.tails_of(0, 1).size == 0
    assert len(index) == 0


@settings(max_examples=100, deadline=None)
@given(case=_case())
def test_int32_arrays_answer_like_int64_and_return_int64(case: tuple[np.ndarray, np.ndarray, np.ndarray, int]) -> None:
    """A bundle's index may be int32 (read-only, memory-mapped): same answers, int64 ids out."""
    triples, heads, relations, num_relations = case
    wide = KnownTails(triples, num_relations)
    narrow = KnownTails.from_arrays(*(a.astype(np.int32) for a in (wide.keys, wide.offsets, wide.tails)), num_relations)
    for array in (narrow.keys, narrow.offsets, narrow.tails):
        array.flags.writeable = False  # as a view of a read-only map: the lookups must not write
    got, want = narrow.lookup(heads, relations), wide.lookup(heads, relations)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        assert g.dtype == np.int64
    for h, r in zip(heads.tolist(), relations.tolist()):
        tails = narrow.tails_of(h, r)
        np.testing.assert_array_equal(tails, wide.tails_of(h, r))
        assert tails.dtype == np.int64


def test_int32_keys_never_match_a_query_key_outside_int32() -> None:
    wide = KnownTails(np.array([[0, 0, 1], [3, 1, 2]]), 2)
    narrow = KnownTails.from_arrays(*(a.astype(np.int32) for a in (wide.keys, wide.offsets, wide.tails)), 2)
    # head * 2 + relation wraps to key 0 or 7 in int32 arithmetic; neither may be found
    heads = np.array([2**31, 2**32, 2**31 + 3, -(2**31)], dtype=np.int64)
    rows, tails = narrow.lookup(heads, np.array([0, 0, 1, 0]))
    assert rows.size == 0 and tails.size == 0
    np.testing.assert_array_equal(narrow.lookup(np.array([3, 0]), np.array([1, 0]))[1], [2, 1])
