"""Name <-> id lookups for entities, relations and types, with close-match suggestions on errors.

A bundle's million entity names stay in their file's bytes (:class:`PackedNames`): a name is decoded
when asked for, and when the names are sorted (``kgedge.data`` sorts its vocabularies) an id is found
by bisection instead of through a dict of a million strings.
"""

from __future__ import annotations

import bisect
import difflib
import mmap
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

from kgedge.runtime.errors import QueryError, UnknownNameError

INVERSE_SUFFIX = "^-1"
# difflib compares against every name; past this many names only those sharing the first character
# are compared, and (names sorted) only the _NEIGHBOURS around the name's sorted position, which share
# its longest prefixes: difflib costs ~40 us a name, so a typo at 1M entities is answered in ~0.2 s.
_FULL_SCAN_LIMIT = 50_000
_NEIGHBOURS = 5_000
# no byte of UTF-8 is 0xFF: every name starting with the bytes P sorts before P + b"\xff"
_PAST_PREFIX = b"\xff"
# names decoded per slice when iterating over all of them
_ITER_BLOCK = 65_536

#: a file's content: read into memory, or a read-only map of the file
FileBytes = bytes | mmap.mmap


class PackedNames(Sequence[str]):
    """Names stored as the bytes of a ``NAME\\n`` per line file, decoded one at a time.

    Args:
        data: the file's bytes (``bytes`` or a read-only ``mmap``); valid UTF-8, checked by the caller.
        offsets: shape ``(N + 1,)`` int64; name ``i`` is ``data[offsets[i] : offsets[i + 1] - 1]`` (the
            ``- 1`` drops its newline; a last line without one has ``offsets[N] = len(data) + 1``).
        ordered: the names are strictly increasing as UTF-8 bytes (hence unique), checked by the caller;
            only then does :meth:`find` bisect.
    """

    def __init__(self, data: FileBytes, offsets: np.ndarray, ordered: bool) -> None:
        self.data, self.offsets, self.ordered = data, offsets, ordered
        self._raw = _RawLines(data, offsets)

    def __len__(self) -> int:
        return len(self._raw)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        return self._raw[index].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for first in range(0, len(self), _ITER_BLOCK):  # one decode and split per block of names
            last = min(first + _ITER_BLOCK, len(self))
            block = self.data[int(self.offsets[first]) : int(self.offsets[last]) - 1]
            yield from block.decode("utf-8").split("\n")

    def __contains__(self, name: object) -> bool:
        if self.ordered:
            return isinstance(name, str) and self.find(name) is not None
        return any(name == x for x in self)

    def find(self, name: str) -> int | None:
        """The id of ``name`` by bisection, or ``None``; needs :attr:`ordered`."""
        if not self.ordered:
            raise ValueError("PackedNames.find needs names sorted by UTF-8 bytes; build a dict instead")
        try:
            key = name.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: never in a UTF-8 file
            return None
        i = bisect.bisect_left(self._raw, key)
        return i if i < len(self._raw) and self._raw[i] == key else None

    def starting_with(self, first: str) -> range:
        """Ids of the names that start with ``first``: a contiguous range in sorted order."""
        if not self.ordered:
            raise ValueError("PackedNames.starting_with needs names sorted by UTF-8 bytes")
        prefix = first.encode("utf-8", "surrogatepass")  # a surrogate's bytes match no UTF-8 name
        return range(bisect.bisect_left(self._raw, prefix), bisect.bisect_left(self._raw, prefix + _PAST_PREFIX))

    def position(self, name: str) -> int:
        """Where ``name`` would sort among the (ordered) names."""
        if not self.ordered:
            raise ValueError("PackedNames.position needs names sorted by UTF-8 bytes")
        return bisect.bisect_left(self._raw, name.encode("utf-8", "surrogatepass"))


class _RawLines(Sequence[bytes]):
    """The undecoded lines of :class:`PackedNames`, for :mod:`bisect`."""

    def __init__(self, data: FileBytes, offsets: np.ndarray) -> None:
        self.data, self.offsets, self.count = data, offsets, len(offsets) - 1

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> bytes:  # type: ignore[override]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f"name index {index} out of range for {self.count} names")
        return self.data[int(self.offsets[index]) : int(self.offsets[index + 1]) - 1]


def suggest(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` names close to ``name`` (``difflib`` ratio >= 0.6), best first."""
    pool: Sequence[str] = names
    if len(names) > _FULL_SCAN_LIMIT and name:
        if isinstance(names, PackedNames) and names.ordered:
            ids = names.starting_with(name[0])
            if len(ids) > _NEIGHBOURS:
                low = min(max(ids.start, names.position(name) - _NEIGHBOURS // 2), ids.stop - _NEIGHBOURS)
                ids = range(low, low + _NEIGHBOURS)
            pool = [names[i] for i in ids]
        else:
            pool = [x for x in names if x[:1] == name[:1]]
    return difflib.get_close_matches(name, pool, n=n)


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Names by id and ids by name for one kind of thing (entity, relation or type).

    Args:
        kind: what the names are, used in error messages.
        names: name of id ``i`` at position ``i``; unique. Ordered :class:`PackedNames` are kept as
            they are and searched by bisection; anything else becomes a tuple with a dict of ids.
    """

    kind: str
    names: Sequence[str]
    _ids: dict[str, int] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.names, PackedNames) and self.names.ordered:
            object.__setattr__(self, "_ids", None)
            return
        names = tuple(self.names)
        ids = {name: i for i, name in enumerate(names)}
        if len(ids) != len(names):
            raise ValueError(f"{self.kind} names are not unique")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_ids", ids)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def _find(self, name: str) -> int | None:
        if self._ids is None:
            return self.names.find(name)  # type: ignore[attr-defined] (ordered PackedNames)
        return self._ids.get(name)

    def id(self, name: str) -> int:
        """The id of ``name``.

        Raises:
            UnknownNameError: ``name`` is not in the vocabulary (the message lists close matches).
        """
        if not isinstance(name, str):
            raise QueryError(f"{self.kind} must be a name (str), got {type(name).__name__} {name!r}")
        found = self._find(name)
        if found is None:
            raise UnknownNameError(self.kind, name, suggest(name, self.names))
        return found

    def name(self, id_: int) -> str:
        """The name of id ``id_``.

        Raises:
            QueryError: ``id_`` is not an int in ``0..len-1``.
        """
        try:
            index = operator.index(id_)  # ints and integer scalars; a float or an array (ndim > 0) raises
        except TypeError:
            index = None
        if isinstance(id_, bool) or index is None:
            raise QueryError(f"{self.kind} id must be an int, got {type(id_).__name__} {id_!r}")
        if not 0 <= index < len(self.names):
            raise QueryError(f"{self.kind} id {index} out of range; valid ids are 0..{len(self.names) - 1}")
        return self.names[index]


def relation_vocabulary(relations: Sequence[str]) -> Vocabulary:
    """Data relations ``0..R-1`` followed by their inverses ``NAME^-1`` (ids ``R..2R-1``)."""
    return Vocabulary("relation", tuple(relations) + tuple(f"{r}{INVERSE_SUFFIX}" for r in relations))
