"""The in-memory knowledge graph: vocabularies, id arrays per split, entity types."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Literal

import numpy as np

from kgedge.data.index import KnownTails
from kgedge.data.tsv import KGFormatError, read_pairs, read_triple_array

log = logging.getLogger(__name__)

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")
UNTYPED = "entity"


@dataclass(frozen=True, eq=False)
class KnowledgeGraph:
    """A KG with integer ids.

    Relation ids ``0..num_relations-1`` are the relations of the files; ``r + num_relations`` is the
    reciprocal of ``r`` (``(t, r⁻¹, h)``), so that head prediction is tail prediction.

    Attributes:
        entities: entity names by id.
        relations: relation names by id (without reciprocals).
        train, valid, test: shape ``(n, 3)`` int64 ``(head, relation, tail)``.
        entity_types: shape ``(num_entities,)`` int64 index into ``type_names``.
        type_names: type names; a single ``"entity"`` type when no ``entity_types.tsv`` exists.
        report: counts of what loading dropped (duplicates, unseen entities).
    """

    name: str
    entities: list[str]
    relations: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    entity_types: np.ndarray
    type_names: list[str]
    report: dict[str, int] = field(default_factory=dict)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def split(self, name: Split) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @cached_property
    def entity_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.entities)}

    @cached_property
    def relation_ids(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.relations)}

    def with_reciprocals(self, triples: np.ndarray) -> np.ndarray:
        """``(n, 3)`` triples followed by their reciprocals ``(t, r + R, h)``; shape ``(2n, 3)``."""
        inverse = np.stack([triples[:, 2], triples[:, 1] + self.num_relations, triples[:, 0]], axis=1)
        return np.concatenate([triples, inverse])

    @cached_property
    def known(self) -> KnownTails:
        """Every true triple of every split, both directions: the filter of filtered ranking."""
        everything = np.concatenate([self.train, self.valid, self.test])
        return KnownTails(self.with_reciprocals(everything), 2 * self.num_relations)

    @cached_property
    def known_train(self) -> KnownTails:
        """Train triples only, both directions: what a user has already "seen"."""
        return KnownTails(self.with_reciprocals(self.train), 2 * self.num_relations)

    def stats(self) -> dict[str, object]:
        """Counts for ``kgedge data stats``."""
        per_relation = np.bincount(self.train[:, 1], minlength=self.num_relations)
        per_type = np.bincount(self.entity_types, minlength=len(self.type_names))
        return {
            "name": self.name,
            "entities": self.num_entities,
            "relations": self.num_relations,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "types": {t: int(c) for t, c in zip(self.type_names, per_type)},
            "train_per_relation": {r: int(c) for r, c in zip(self.relations, per_relation)},
            "dropped": dict(self.report),
        }


def _row_keys(rows: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray | None:
    """One int64 per ``(h, r, t)`` row, ordered like the rows; None when the ids do not fit one int64."""
    if num_entities**2 * max(num_relations, 1) >= 2**63:
        return None
    return (rows[:, 0] * num_relations + rows[:, 1]) * num_entities + rows[:, 2]


def _unique_rows(triples: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray:
    """The first occurrence of every row, in file order (sorting int64 keys: 10x np.unique(axis=0))."""
    if len(triples) == 0:
        return triples
    keys = _row_keys(triples, num_entities, num_relations)
    if keys is None:
        _, first = np.unique(triples, axis=0, return_index=True)
        return triples[np.sort(first)]
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = order[np.concatenate([[True], ordered[1:] != ordered[:-1]])]
    return triples[np.sort(first)]


def _encode(
    path: Path, triples: np.ndarray, entity_ids: dict[str, int], relation_ids: dict[str, int]
) -> tuple[np.ndarray, int]:
    """Map names (shape ``(n, 3)`` objects) to ids; triples with a name unseen in train are dropped and counted."""
    def ids(column: np.ndarray, vocab: dict[str, int]) -> np.ndarray:  # dict lookups in C, not a Python loop
        return np.fromiter(map(vocab.get, column, repeat(-1)), dtype=np.int64, count=len(column))

    array = np.stack([ids(triples[:, 0], entity_ids), ids(triples[:, 1], relation_ids),
                      ids(triples[:, 2], entity_ids)], axis=1).reshape(-1, 3)
    keep = (array >= 0).all(axis=1)
    dropped = int((~keep).sum())
    if dropped:
        log.warning("%s: dropped %d triples whose entity or relation never occurs in train", path, dropped)
    return array[keep], dropped


def _rows_in(rows: np.ndarray, reference: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray:
    """Shape ``(len(rows),)`` bool: which ``(h, r, t)`` rows also occur in ``reference``."""
    keys, known = _row_keys(rows, num_entities, num_relations), _row_keys(reference, num_entities, num_relations)
    if keys is None or known is None:  # ids too large for one int64 key: compare tuples
        seen = set(map(tuple, reference.tolist()))
        return np.array([tuple(row) in seen for row in rows.tolist()], dtype=bool)
    if len(known) == 0:
        return np.zeros(len(rows), dtype=bool)
    known = np.sort(known)  # sort + searchsorted: np.isin is ~10x slower at 10M rows
    pos = np.minimum(np.searchsorted(known, keys), len(known) - 1)
    return known[pos] == keys


def _fresh(names: list[str]) -> list[str]:
    """New copies of ``names``, allocated together. The parsed names are scattered among millions of
    strings freed after encoding; keeping those would pin ~1.5 GiB of allocator pages at 10M triples."""
    return "\n".join(names).split("\n") if names else []


def load_kg(directory: Path, name: str | None = None) -> KnowledgeGraph:
    """Load ``train.txt``, ``valid.txt``, ``test.txt`` and the optional ``entity_types.tsv``.

    Vocabularies come from train, sorted by name so that ids do not depend on line order.
    Duplicates are removed and counted; valid/test triples naming an entity or relation that never
    occurs in train are dropped with a warning (the usual policy), as are valid/test triples that
    also occur in train.

    Raises:
        KGFormatError: a missing directory or split, or a malformed file (names file and line).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise KGFormatError(f"{directory}: not a directory holding train.txt, valid.txt, test.txt")
    missing = [s for s in SPLITS if not (directory / f"{s}.txt").is_file()]
    if missing:
        raise KGFormatError(f"{directory}: missing split file(s) {', '.join(f'{s}.txt' for s in missing)}")
    raw = {s: read_triple_array(directory / f"{s}.txt") for s in SPLITS}
    entities = _fresh(sorted(set(raw["train"][:, 0]).union(raw["train"][:, 2])))
    relations = _fresh(sorted(set(raw["train"][:, 1])))
    entity_ids = {e: i for i, e in enumerate(entities)}
    relation_ids = {r: i for i, r in enumerate(relations)}

    report: dict[str, int] = {}
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        array, unseen = _encode(directory / f"{split}.txt", raw[split], entity_ids, relation_ids)
        unique = _unique_rows(array, len(entities), len(relations))
        report[f"{split}_duplicates"] = len(array) - len(unique)
        if split != "train":
            report[f"{split}_unseen"] = unseen
        arrays[split] = unique
        del raw[split]  # the names are no longer needed: free them early
    for split in ("valid", "test"):
        leak = _rows_in(arrays[split], arrays["train"], len(entities), len(relations))
        report[f"{split}_in_train"] = int(leak.sum())
        arrays[split] = arrays[split][~leak]
    for key, count in report.items():
        if count and not key.endswith("_unseen"):
            log.warning("%s: removed %d triples (%s)", directory, count, key.replace("_", " "))

    type_names = [UNTYPED]
    entity_types = np.zeros(len(entities), dtype=np.int64)
    types_path = directory / "entity_types.tsv"
    if types_path.is_file():
        given = read_pairs(types_path)
        type_names = sorted({given.get(e, UNTYPED) for e in entities})
        type_ids = {t: i for i, t in enumerate(type_names)}
        entity_types = np.array([type_ids[given.get(e, UNTYPED)] for e in entities], dtype=np.int64)

    return KnowledgeGraph(
        name=name or directory.name,
        entities=entities,
        relations=relations,
        train=arrays["train"],
        valid=arrays["valid"],
        test=arrays["test"],
        entity_types=entity_types,
        type_names=type_names,
        report=report,
    )
