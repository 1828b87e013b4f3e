"""Checking query arguments before they reach onnxruntime, with messages that say what is allowed."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from kgedge.runtime.errors import QueryError


_INT64 = np.dtype(np.int64)  # the native int64 descriptor: ``is`` finds it without a dtype comparison


def check_ids(values: Any, what: str, high: int) -> np.ndarray:
    """A non-empty 1-D integer array with values in ``0..high-1``, as int64.

    Raises:
        QueryError: not an integer array (floats and bools are refused, not rounded), not 1-D,
            empty, or a value out of range.
    """
    if type(values) is np.ndarray and values.dtype is _INT64 and values.shape == (1,):
        # the single query of a serving loop: one Python comparison instead of two array reductions (and
        # no numpy comparison: after a graph run numpy's code is out of the CPU's caches, ~1 us a call)
        if 0 <= values.item() < high:
            return values
    try:
        array = np.asarray(values)
    except (TypeError, ValueError):  # ragged nesting: numpy cannot build an array of it
        raise QueryError(f"{what} must be a 1-D array of integer ids, got a ragged {type(values).__name__}") from None
    if array.dtype.kind not in "iu":
        raise QueryError(f"{what} must be integer ids (int32/int64), got dtype {array.dtype}")
    if array.ndim != 1:
        raise QueryError(f"{what} must be 1-D (one id per query), got shape {array.shape}")
    if len(array) == 0:
        raise QueryError(f"{what} is empty; pass at least one query")
    if array.min() < 0 or array.max() >= high:
        bad = array[(array < 0) | (array >= high)][0]
        raise QueryError(f"{what} contains id {bad}, out of range; valid ids are 0..{high - 1}")
    return array.astype(np.int64, copy=False)


def check_k(k: Any, candidates: int, scope: str) -> int:
    """``k`` as an int in ``1..candidates``.

    Args:
        scope: what the candidates are, for the message (e.g. ``"entities of types ['product']"``).

    Raises:
        QueryError: not an int, ``k <= 0`` or more than the candidates.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise QueryError(f"k must be an int, got {type(k).__name__} {k!r}")
    if k <= 0:
        raise QueryError(f"k={k} must be at least 1")
    if k > candidates:
        raise QueryError(f"k={k} is more than the {candidates} {scope}; ask for at most {candidates}")
    return int(k)


def check_exclude(exclude: Any, batch: int, num_entities: int) -> np.ndarray:
    """Per-query ids to exclude as shape ``(batch, X)`` int64 padded with -1.

    Args:
        exclude: ``None``, a ``(batch, X)`` integer array padded with -1, or ``batch`` sequences of
            ids (ragged).

    Raises:
        QueryError: wrong row count, non-integer ids, or ids outside ``-1..num_entities-1``.
    """
    if exclude is None:
        return _nothing_excluded(batch)
    if isinstance(exclude, np.ndarray):
        array = exclude
    else:
        try:
            rows = [np.asarray(row) for row in exclude]
        except (TypeError, ValueError):  # not iterable, or a row numpy cannot make an array of
            raise QueryError("exclude must be a (batch, X) integer array or one sequence of ids per query") from None
        if any(r.ndim != 1 for r in rows):
            raise QueryError("exclude must hold one sequence of ids per query")
        if any(r.dtype.kind not in "iu" for r in rows if r.size):
            raise QueryError("exclude must hold integer entity ids")
        width = max([0, *(r.size for r in rows)])
        array = np.full((len(rows), width), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            array[i, : r.size] = r
    if array.ndim != 2 or array.shape[0] != batch:
        raise QueryError(f"exclude must have shape (batch={batch}, X), got {array.shape}")
    if array.size and array.dtype.kind not in "iu":
        raise QueryError(f"exclude must hold integer entity ids, got dtype {array.dtype}")
    if array.size and (array.min() < -1 or array.max() >= num_entities):
        raise QueryError(f"exclude holds ids outside -1..{num_entities - 1} (-1 is padding)")
    return np.ascontiguousarray(array, dtype=np.int64)


@lru_cache(maxsize=64)
def _nothing_excluded(batch: int) -> np.ndarray:
    """A read-only ``(batch, 0)`` int64 array, made once per batch size (single queries ask for it every time)."""
    empty = np.zeros((batch, 0), dtype=np.int64)
    empty.flags.writeable = False
    return empty


def names_of(value: str | Sequence[str], what: str) -> list[str]:
    """One name or a sequence of names as a non-empty list of str."""
    try:
        names = [value] if isinstance(value, str) else list(value)
    except TypeError:
        raise QueryError(f"{what} must be a name or a sequence of names, got {type(value).__name__} {value!r}") from None
    if not names:
        raise QueryError(f"{what} is empty; pass at least one name")
    for name in names:
        if not isinstance(name, str):
            raise QueryError(f"{what} must be names (str), got {type(name).__name__} {name!r}")
    return names
