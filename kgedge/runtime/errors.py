"""The two errors of the runtime: a bad bundle (fix the files) and a bad query (fix the call).

Both are ``ValueError``s so that the CLI reports them as one line without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class BundleError(ValueError):
    """A bundle that cannot be loaded: the message names the file and what to do (usually re-export)."""


class QueryError(ValueError):
    """A query the model cannot answer as asked: the message says which argument and what is allowed."""


class UnknownNameError(QueryError):
    """A name that is not in the bundle; ``suggestions`` holds close matches (maybe empty).

    Attributes:
        kind: ``"entity"``, ``"relation"`` or ``"type"``.
        name: the name that was asked for.
        suggestions: up to three close matches, best first.
    """

    def __init__(self, kind: str, name: str, suggestions: Sequence[str]) -> None:
        self.kind, self.name, self.suggestions = kind, name, tuple(suggestions)
        hint = f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {kind} {name!r}{hint}")
