"""Running the bundle's top-k graph on checked id arrays: chunking, and never a masked result.

The graph scores every entity for each ``(head, relation)``, masks disallowed types and excluded
ids with ``-inf`` and returns the top ``k``. When ``k`` exceeds what a row may return, the graph
still fills ``k`` slots with masked entities; :meth:`TopKGraph.topk` drops those (and, as a guard
against a faulty export, anything disallowed or excluded whatever its score) and pads with
``-1`` / ``-inf`` at the end of the row.
"""

from __future__ import annotations

import logging
import math
import threading
from functools import cached_property

import numpy as np
import onnxruntime as ort

from kgedge.runtime.session import MASKED_INPUT, runs_plain

log = logging.getLogger(__name__)

# Each run materialises a (rows, N) float32 score matrix inside onnxruntime, (rows, N, W) for an L1
# model's differences; chunk the batch so that it stays near 32 MiB (8M cells) whatever N is.
MAX_CELLS_PER_RUN = 1 << 23
OUTPUTS = ["ids", "scores"]
# Up to this many scores, the "nothing masked" test of a result sums a Python list: after a graph run the
# first numpy reduction costs ~10 us (its code has left the CPU's caches), the list ~2 us (one probe: one
# thread, 14,541 x 64 int8, k = 10); larger results use numpy.
PYTHON_CHECK_MAX = 1024
BROADCAST_MAX = 1 << 20  # comparisons of returned ids with excluded ids made by one broadcast (1 MiB of bools)
BOUND_KS_PER_THREAD = 4  # single-query bindings kept per thread (one per k asked for; the oldest goes first)
_TRUE = np.array(True)


class _BoundQuery:
    """A single plain query ``(head, relation, k)`` bound once to fixed buffers (one thread's, one ``k``).

    ``session.run`` turns each feed into an onnxruntime value and allocates each output on every call; an
    IOBinding of buffers that the query writes into in place skips both: at 14,541 x 64 (int8, one thread)
    a run took 0.88x the time of ``session.run`` with the same ``RunOptions`` (one interleaved probe). The
    binding is called through the session's binding object: the Python wrapper's ``run_with_iobinding``
    checks WebGPU graph capture on every call and, given run options, looks their capture key up through
    a C++ exception (tens of us); without that object (another onnxruntime) the wrapper is used, without
    run options.
    """

    def __init__(self, session: ort.InferenceSession, k: int, run_options: ort.RunOptions) -> None:
        # the buffers must outlive the binding, which only points at them
        self.head = np.zeros(1, dtype=np.int64)
        self.relation = np.zeros(1, dtype=np.int64)
        self.k = np.array([k], dtype=np.int64)
        self.ids = np.empty((1, k), dtype=np.int64)
        self.scores = np.empty((1, k), dtype=np.float32)
        binding = session.io_binding()
        for name, array in (("head", self.head), ("relation", self.relation), ("k", self.k)):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array))
        for name, array in (("ids", self.ids), ("scores", self.scores)):
            binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(array))
        inner, raw = getattr(session, "_sess", None), getattr(binding, "_iobinding", None)
        if inner is not None and raw is not None and hasattr(inner, "run_with_iobinding"):
            self._call = lambda: inner.run_with_iobinding(raw, run_options)
        else:  # onnxruntime without the binding object
            self._call = lambda: session.run_with_iobinding(binding)

    def run(self, head: int, relation: int) -> tuple[np.ndarray, np.ndarray]:
        self.head[0] = head
        self.relation[0] = relation
        self._call()
        return self.ids.copy(), self.scores.copy()  # the next query overwrites the buffers


class TopKGraph:
    """The onnxruntime session of a bundle with the arrays it needs, queried by id.

    Args:
        session: a session whose I/O follows the contract (see ``session.GRAPH_INPUTS``).
        entity_types: shape ``(N,)`` integer type id of each entity.
        num_types: ``T``, the length of ``allowed_types``.
        cells_per_entity: floats the graph holds per entity and query row: 1 (a score), or the row
            width for the L1 distance, whose graph holds every difference.
    """

    def __init__(self, session: ort.InferenceSession, entity_types: np.ndarray, num_types: int,
                 cells_per_entity: int = 1) -> None:
        self.session = session
        self.plain_runs = runs_plain(session)  # False for bundles exported before the `masked` input
        self.cells_per_entity = cells_per_entity
        self.entity_types = entity_types
        self.num_types = num_types
        self.num_entities = len(entity_types)
        self.type_counts = np.bincount(entity_types, minlength=num_types)
        self.every_type = np.ones(num_types, dtype=bool)  # the mask of an unrestricted query
        self.every_type.flags.writeable = False
        self._k_inputs: dict[int, np.ndarray] = {}  # k as the graph's [1] int64 input, made once per k
        # one RunOptions for every call: without it the binding builds a default one per run (~4 us);
        # onnxruntime only reads it, so threads may share it
        self._run_options = ort.RunOptions()
        self._bound = threading.local()  # each thread's single-query bindings (they hold buffers), by k

    @cached_property
    def _type_view(self) -> memoryview:
        return memoryview(np.ascontiguousarray(self.entity_types))

    def allowed_entities(self, allowed_types: np.ndarray) -> np.ndarray:
        """Shape ``(N,)`` bool: entities whose type is allowed."""
        return allowed_types[self.entity_types]

    def count_allowed(self, allowed_types: np.ndarray) -> int:
        """How many entities have an allowed type (per-type counts, not a pass over all N)."""
        return int(self.type_counts[np.asarray(allowed_types, dtype=bool)].sum())

    def _run(self, heads: np.ndarray, relations: np.ndarray, k: int, allowed_types: np.ndarray,
             exclude: np.ndarray, masked: bool) -> tuple[np.ndarray, np.ndarray]:
        """Raw graph outputs over chunks of rows: ids ``(B, k)`` int64, scores ``(B, k)`` float32.

        ``masked``: some type is disallowed or some id excluded; otherwise a graph that can (``plain_runs``)
        skips the masks and is fed only the ids and ``k``.
        """
        if len(heads) == 1 and not masked and self.plain_runs and (bound := self._bound_query(k)) is not None:
            return bound.run(heads.item(), relations.item())
        k_input = self._k_inputs.get(k)
        if k_input is None:
            k_input = self._k_inputs.setdefault(k, np.array([k], dtype=np.int64))
        feeds = {"head": heads, "relation": relations, "k": k_input}
        if masked or not self.plain_runs:
            feeds["allowed_types"] = allowed_types
            feeds["exclude"] = exclude
            if self.plain_runs:
                feeds[MASKED_INPUT] = _TRUE
        rows = max(1, MAX_CELLS_PER_RUN // (self.num_entities * self.cells_per_entity))
        if len(heads) <= rows:  # one run, nothing to slice or concatenate (the single-query path)
            ids, scores = self.session.run(OUTPUTS, feeds, self._run_options)
            return ids, scores  # int64 and float32: the session's output types were checked when it was created
        parts = []
        for i in range(0, len(heads), rows):
            part = {**feeds, "head": heads[i : i + rows], "relation": relations[i : i + rows]}
            if "exclude" in feeds:
                part["exclude"] = exclude[i : i + rows]
            parts.append(self.session.run(OUTPUTS, part, self._run_options))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _bound_query(self, k: int) -> _BoundQuery | None:
        """This thread's binding of a single plain query for ``k`` (made on first use), or None for the
        thread's first single query: making a binding costs ~26 us (one probe), more than a run saves, so a
        thread that asks once (an HTTP server's thread per connection) runs through ``session.run``."""
        by_k = getattr(self._bound, "by_k", None)
        if by_k is None:
            self._bound.by_k = {}
            return None
        bound = by_k.get(k)
        if bound is None:
            if len(by_k) >= BOUND_KS_PER_THREAD:
                del by_k[next(iter(by_k))]
            bound = by_k[k] = _BoundQuery(self.session, k, self._run_options)
        return bound

    def topk(self, heads: np.ndarray, relations: np.ndarray, k: int, allowed_types: np.ndarray,
             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` allowed, non-excluded entities per query; inputs already checked.

        Args:
            heads, relations: shape ``(B,)`` int64 valid ids.
            k: ``1..N``.
            allowed_types: shape ``(T,)`` bool.
            exclude: shape ``(B, X)`` int64 ids in ``-1..N-1`` (-1 = padding).

        Returns:
            ``(ids, scores)`` shape ``(B, k)`` int64 / float32, best first; rows with fewer valid
            results end with id -1 and score -inf.
        """
        restricted = allowed_types is not self.every_type and not allowed_types.all()
        ids, scores = self._run(heads, relations, k, allowed_types, exclude, restricted or bool(exclude.shape[1]))
        if not restricted and not exclude.shape[1] and _all_finite(scores):
            return ids, scores  # nothing masked, nothing to drop (NaN or inf fail the test and are handled below)
        if ids.size <= PYTHON_CHECK_MAX and exclude.size <= PYTHON_CHECK_MAX:  # a few queries: lists are faster
            return self._kept_small(ids, scores, allowed_types if restricted else None, exclude)
        finite = scores > -np.inf  # False for -inf (masked) and NaN
        valid = finite
        if restricted:
            valid = valid & allowed_types[self.entity_types[ids]]
        if exclude.shape[1]:
            valid = valid & ~_excluded(ids, exclude, self.num_entities)
        if restricted or exclude.shape[1]:  # the guard: nothing masked may come back with a finite score
            leaked = finite & ~valid
            if leaked.any():
                _warn_leaked(int(leaked.sum()))
        if not valid.all():
            if np.isnan(scores).any():
                _warn_nan(int(np.isnan(scores).sum()))
            order = np.argsort(~valid, axis=1, kind="stable")  # valid results first, order kept
            ids, scores, valid = (np.take_along_axis(a, order, axis=1) for a in (ids, scores, valid))
            ids = np.where(valid, ids, -1)
            scores = np.where(valid, scores, np.float32(-np.inf)).astype(np.float32)
        return ids, scores

    def _kept_small(self, ids: np.ndarray, scores: np.ndarray, allowed_types: np.ndarray | None,
                    exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`topk`'s checks on lists, for small results (the numpy version's dozen array operations
        cost more than the loop there): the same results, the same warnings."""
        id_rows, score_rows, excluded = ids.tolist(), scores.tolist(), exclude.tolist()
        type_ok = None
        if allowed_types is not None:  # Python ints from a memoryview: no fancy indexing for k ids
            allowed, types = allowed_types.tolist(), self._type_view
            type_ok = [[allowed[types[entity]] for entity in row] for row in id_rows]
        leaked = nans = 0
        out_ids, out_scores, changed = [], [], False
        for b, (row_ids, row_scores) in enumerate(zip(id_rows, score_rows)):
            skip = set(excluded[b]) if excluded[b] else ()
            kept_ids, kept_scores = [], []
            for j, (entity, score) in enumerate(zip(row_ids, row_scores)):
                if score != score:  # NaN
                    nans += 1
                    continue
                keep = (type_ok is None or type_ok[b][j]) and entity not in skip
                if score > -math.inf and keep:
                    kept_ids.append(entity)
                    kept_scores.append(score)
                elif score > -math.inf:
                    leaked += 1
            changed = changed or len(kept_ids) < len(row_ids)
            pad = len(row_ids) - len(kept_ids)
            out_ids.append(kept_ids + [-1] * pad)
            out_scores.append(kept_scores + [-math.inf] * pad)
        if leaked:
            _warn_leaked(leaked)
        if nans:
            _warn_nan(nans)
        if not changed:
            return ids, scores
        return np.array(out_ids, dtype=np.int64).reshape(ids.shape), np.array(out_scores, dtype=np.float32).reshape(ids.shape)

    def score_all(self, heads: np.ndarray, relations: np.ndarray) -> np.ndarray:
        """Scores of every entity, shape ``(B, N)`` float32, column ``j`` = entity id ``j``.

        Runs the same graph with ``k = N``, every type allowed and nothing excluded, then puts
        each score back at its entity's column.
        """
        empty = np.zeros((len(heads), 0), dtype=np.int64)  # fed only to a graph without input defaults
        ids, scores = self._run(heads, relations, self.num_entities, self.every_type, empty, masked=False)
        out = np.empty((len(heads), self.num_entities), dtype=np.float32)
        np.put_along_axis(out, ids, scores, axis=1)
        return out


def _warn_leaked(count: int) -> None:
    log.warning("the graph ranked %d disallowed or excluded entities with finite scores; they were "
                "dropped, but the bundle's masking is wrong: re-export it", count)


def _warn_nan(count: int) -> None:
    log.warning("the graph returned %d NaN scores; they were dropped: re-export the bundle", count)


def _excluded(ids: np.ndarray, exclude: np.ndarray, num_entities: int) -> np.ndarray:
    """Shape ``(B, k)`` bool: whether ``ids[b, j]`` is among ``exclude[b]`` (-1 padding matches nothing).

    Up to ``BROADCAST_MAX`` comparisons, one broadcast ``==``: a recommendation (k = 10, a few seen items)
    takes ~3 us, where ``np.isin`` took ~40 us (one probe); beyond that, ``np.isin`` on (row, id) keys.
    """
    if ids.size * exclude.shape[1] <= BROADCAST_MAX:
        return (ids[:, :, None] == exclude[:, None, :]).any(axis=2)
    row = np.arange(len(ids), dtype=np.int64)[:, None]
    return np.isin(row * num_entities + ids, (row * num_entities + exclude)[exclude >= 0])


def _all_finite(scores: np.ndarray) -> bool:
    """Whether no score is -inf, +inf or NaN (a sum that overflows says False: the caller then checks each)."""
    if scores.size <= PYTHON_CHECK_MAX:
        return math.isfinite(sum(scores.ravel().tolist()))
    return bool(np.isfinite(scores).all())
