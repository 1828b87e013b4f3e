"""An index of known true triples, used to filter ranks and to exclude already-seen items."""

from __future__ import annotations

import bisect
from functools import cached_property

import numpy as np

#: dtypes of the non-negative id arrays a bundle stores (seen-index keys, offsets, tails; entity types):
#: the exporter writes the narrowest that holds the values, the runtime maps them without a copy
STORED_ID_DTYPES: tuple[type[np.integer], ...] = (np.uint8, np.uint16, np.int32, np.int64)


class KnownTails:
    """For each ``(head, relation)`` pair, the sorted tails known to be true.

    Stored as CSR over sorted keys ``head * num_relations + relation``: memory is two integer arrays the
    size of the triple set, so it holds at millions of triples. Built here the arrays are int64; a
    bundle's index may hold narrower arrays (:data:`STORED_ID_DTYPES`, read-only, memory-mapped),
    searched without an int64 copy.
    Either way the ids returned are int64.

    Args:
        triples: shape ``(n, 3)`` int64 ``(head, relation, tail)``; relations already include
            reciprocal ids when the caller wants head prediction.
        num_relations: the number of relation ids (reciprocals included).
    """

    def __init__(self, triples: np.ndarray, num_relations: int) -> None:
        triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
        keys = triples[:, 0] * num_relations + triples[:, 1]
        order = np.lexsort((triples[:, 2], keys))
        keys, tails = keys[order], triples[order, 2]
        self.num_relations = num_relations
        self.keys, starts = np.unique(keys, return_index=True)
        self.offsets = np.append(starts, len(keys)).astype(np.int64)
        self.tails = tails

    @classmethod
    def from_arrays(cls, keys: np.ndarray, offsets: np.ndarray, tails: np.ndarray, num_relations: int) -> KnownTails:
        """The index over arrays already in CSR form (as ``kgedge export`` saves them); no copy is made.

        Args:
            keys: shape ``(m,)`` int32 or int64, strictly increasing ``head * num_relations + relation``.
            offsets: shape ``(m + 1,)`` int32 or int64, non-decreasing from 0 to ``len(tails)``.
            tails: shape ``(n,)`` int32 or int64, the tails of key ``i`` at ``offsets[i]:offsets[i + 1]``.

        The caller checks those properties (``kgedge.runtime.bundle`` does, before any use).
        """
        index = cls.__new__(cls)
        index.keys, index.offsets, index.tails, index.num_relations = keys, offsets, tails, num_relations
        return index

    def _ranges(self, heads: np.ndarray, relations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(heads, dtype=np.int64) * self.num_relations + np.asarray(relations, dtype=np.int64)
        if len(self.keys) == 0:  # an empty index (e.g. a bundle exported without data): nothing is known
            empty = np.zeros(keys.shape, dtype=np.int64)
            return empty, empty
        inside = None
        if self.keys.dtype != np.int64:
            # search with the index's own dtype: searchsorted would otherwise convert the whole
            # (memory-mapped) key array to int64 on every call
            limits = np.iinfo(self.keys.dtype)
            inside = (keys >= limits.min) & (keys <= limits.max)
            keys = np.where(inside, keys, 0).astype(self.keys.dtype)
        pos = np.searchsorted(self.keys, keys)
        pos_clipped = np.minimum(pos, len(self.keys) - 1)
        found = (pos < len(self.keys)) & (self.keys[pos_clipped] == keys)
        if inside is not None:
            found &= inside
        starts = np.where(found, self.offsets[pos_clipped], 0).astype(np.int64, copy=False)
        ends = np.where(found, self.offsets[pos_clipped + 1], 0).astype(np.int64, copy=False)
        return starts, ends

    def lookup(self, heads: np.ndarray, relations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Known tails of a batch of queries as coordinate lists.

        Returns:
            ``(rows, tails)``, both shape ``(m,)`` int64: query ``rows[i]`` has the known tail ``tails[i]``.
        """
        starts, ends = self._ranges(heads, relations)
        counts = ends - starts
        rows = np.repeat(np.arange(len(counts)), counts)
        # position of each element inside its own range, then shift to the range's start
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.tails[np.repeat(starts, counts) + within].astype(np.int64, copy=False)

    def tails_of(self, head: int, relation: int) -> np.ndarray:
        """Sorted known tails of one query, shape ``(m,)`` int64 (the single-query path).

        A binary search over memoryviews of the keys and offsets: their items are Python ints, so no numpy
        call runs until the slice (after a graph run numpy's scalar operations cost ~1-2 us each).
        """
        key = int(head) * self.num_relations + int(relation)
        keys = self._key_view
        pos = bisect.bisect_left(keys, key)
        if pos == len(keys) or keys[pos] != key:
            return np.zeros(0, dtype=np.int64)
        offsets = self._offset_view
        return self.tails[offsets[pos] : offsets[pos + 1]].astype(np.int64, copy=False)

    @cached_property
    def _key_view(self) -> memoryview:
        return memoryview(np.ascontiguousarray(self.keys))

    @cached_property
    def _offset_view(self) -> memoryview:
        return memoryview(np.ascontiguousarray(self.offsets))

    def __len__(self) -> int:
        return len(self.tails)
