"""Name <-> id lookups for entities, relations and types, with close-match suggestions on errors."""

from __future__ import annotations

import difflib
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

from kgedge.runtime.errors import QueryError, UnknownNameError

INVERSE_SUFFIX = "^-1"
# difflib compares against every name; past this many names only those sharing the first character
# are compared, so that a typo in a 1M-entity bundle answers in milliseconds, not seconds.
_FULL_SCAN_LIMIT = 50_000


def suggest(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` names close to ``name`` (``difflib`` ratio >= 0.6), best first."""
    pool: Sequence[str] = names
    if len(names) > _FULL_SCAN_LIMIT and name:
        pool = [x for x in names if x[:1] == name[:1]]
    return difflib.get_close_matches(name, pool, n=n)


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Names by id and ids by name for one kind of thing (entity, relation or type).

    Args:
        kind: what the names are, used in error messages.
        names: name of id ``i`` at position ``i``; unique.
    """

    kind: str
    names: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids = {name: i for i, name in enumerate(self.names)}
        if len(ids) != len(self.names):
            raise ValueError(f"{self.kind} names are not unique")
        object.__setattr__(self, "_ids", ids)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def id(self, name: str) -> int:
        """The id of ``name``.

        Raises:
            UnknownNameError: ``name`` is not in the vocabulary (the message lists close matches).
        """
        if not isinstance(name, str):
            raise QueryError(f"{self.kind} must be a name (str), got {type(name).__name__} {name!r}")
        try:
            return self._ids[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, suggest(name, self.names)) from None

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
