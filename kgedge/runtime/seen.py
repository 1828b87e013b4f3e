"""Items a user already has: the bundle's train index plus items added on the device.

Items added with :meth:`SeenIndex.add` are kept in memory (both directions, like the train index)
and persisted as ``head<TAB>relation<TAB>tail`` name lines in an overlay file beside the model,
rewritten atomically on every change. The overlay is not in the manifest's checksums because it
changes on the device; it is validated line by line on load instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kgedge.atomic import atomic_path
from kgedge.data.index import KnownTails
from kgedge.runtime.errors import BundleError, UnknownNameError
from kgedge.runtime.vocab import Vocabulary

log = logging.getLogger(__name__)

HEADER = "# kgedge seen overlay v1: head<TAB>relation<TAB>tail, one fact per line, names as in the bundle\n"


class SeenIndex:
    """Known tails of ``(head, relation)`` from train and from on-device additions; thread-safe.

    Args:
        known: the bundle's train index (both directions, ``2R`` relation ids).
        entities: entity vocabulary (``N`` names).
        relations: data relation names (``R`` of them; the overlay holds data relations only).
        path: the overlay file that :meth:`add` writes.
    """

    def __init__(self, known: KnownTails, entities: Vocabulary, relations: Vocabulary, path: Path) -> None:
        self.known, self.entities, self.relations, self.path = known, entities, relations, path
        self._num_relations = len(relations)
        self._added: dict[tuple[int, int], set[int]] = {}
        self._facts: set[tuple[int, int, int]] = set()  # (head, data relation, tail): what the file holds
        self._lock = threading.Lock()

    def load_overlay(self, label: str, text: str) -> int:
        """Apply an overlay file's lines; returns the number of facts read.

        Raises:
            BundleError: a line without three tab-separated fields, an unknown name or an inverse
                relation; the message names ``label`` and the line.
        """
        facts = []
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise BundleError(f"{label}:{number}: expected head<TAB>relation<TAB>tail, got {len(fields)} "
                                  "field(s); fix or delete the line")
            try:
                head = self.entities.id(fields[0])
                relation = self.relations.id(fields[1])
                tail = self.entities.id(fields[2])
            except UnknownNameError as err:
                raise BundleError(f"{label}:{number}: {err}; fix or delete the line") from None
            facts.append((head, relation, tail))
        with self._lock:
            for fact in facts:
                self._remember(fact)
        log.info("seen overlay %s: %d facts", label, len(facts))
        return len(facts)

    def _remember(self, fact: tuple[int, int, int]) -> None:
        head, relation, tail = fact
        self._facts.add(fact)
        self._added.setdefault((head, relation), set()).add(tail)
        self._added.setdefault((tail, relation + self._num_relations), set()).add(head)

    def add(self, head: int, relation: int, items: Sequence[int]) -> int:
        """Record that ``head`` has ``items`` under ``relation`` and persist the overlay.

        ``relation`` may be an inverse id (``r + R``): ``(h, r^-1, t)`` is stored as ``(t, r, h)``.
        Facts already in train or in the overlay are skipped. If writing the file fails, nothing
        changes in memory either.

        Returns:
            the number of new facts.
        """
        r = self._num_relations
        facts = [(head, relation, int(t)) if relation < r else (int(t), relation - r, head) for t in items]
        with self._lock:
            new = [f for f in dict.fromkeys(facts)
                   if f not in self._facts and not self._in_train(f)]
            if not new:
                return 0
            self._write(self._facts | set(new))
            for fact in new:
                self._remember(fact)
        log.info("seen overlay %s: +%d facts", self.path, len(new))
        return len(new)

    def _in_train(self, fact: tuple[int, int, int]) -> bool:
        return bool(len(self.known.keys)) and fact[2] in self.known.tails_of(fact[0], fact[1])

    def _write(self, facts: set[tuple[int, int, int]]) -> None:
        names, rels = self.entities.names, self.relations.names
        lines = sorted(f"{names[h]}\t{rels[r]}\t{names[t]}\n" for h, r, t in facts)
        with atomic_path(self.path) as tmp:
            tmp.write_text(HEADER + "".join(lines), encoding="utf-8")

    def lookup(self, heads: np.ndarray, relations: np.ndarray) -> list[np.ndarray]:
        """Seen tails of each query, sorted and unique.

        Args:
            heads, relations: shape ``(B,)`` int64 ids (relations ``0..2R-1``).

        Returns:
            ``B`` int64 arrays.
        """
        if len(heads) == 1:  # one query (a device's usual call): a scalar search, no coordinate lists
            h, r = heads.item(0), relations.item(0)
            with self._lock:
                more = self._added.get((h, r))
            return [_with_added(self.known.tails_of(h, r), more)]
        if len(self.known.keys):
            rows, tails = self.known.lookup(heads, relations)
        else:  # KnownTails cannot search an empty index
            rows, tails = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        per_row = np.split(tails, np.searchsorted(rows, np.arange(1, len(heads))))
        with self._lock:
            extra = [self._added.get((int(h), int(r))) for h, r in zip(heads, relations)]
        return [_with_added(base, more) for base, more in zip(per_row, extra)]

    def added(self) -> list[tuple[int, int, int]]:
        """The on-device facts ``(head, data relation, tail)``, sorted."""
        with self._lock:
            return sorted(self._facts)


def _with_added(base: np.ndarray, added: set[int] | None) -> np.ndarray:
    """Sorted unique union of train tails ``base`` and on-device ``added`` ones (``base`` when none)."""
    return np.union1d(base, np.fromiter(added, dtype=np.int64)) if added else base


def pad_rows(rows: Sequence[np.ndarray], width: int = 0) -> np.ndarray:
    """Stack ragged id rows into shape ``(B, max(width, longest))`` int64, padded with -1."""
    if len(rows) == 1 and len(rows[0]) >= width:  # one query: its row as it is (one numpy call, not two)
        return np.array(rows[0], dtype=np.int64, ndmin=2)
    width = max([width, *(len(r) for r in rows)])
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
