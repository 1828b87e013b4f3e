"""The in-memory knowledge graph: vocabularies, id arrays per split, entity types."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from kgedge.data.index import KnownTails
from kgedge.data.tsv import KGFormatError, read_pairs, read_triples

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


def _unique_rows(triples: np.ndarray) -> np.ndarray:
    if len(triples) == 0:
        return triples
    _, first = np.unique(triples, axis=0, return_index=True)
    return triples[np.sort(first)]


def _encode(
    path: Path, triples: list[tuple[str, str, str]], entity_ids: dict[str, int], relation_ids: dict[str, int]
) -> tuple[np.ndarray, int]:
    """Map names to ids; triples with a name unseen in train are dropped and counted."""
    rows = [
        (entity_ids.get(h, -1), relation_ids.get(r, -1), entity_ids.get(t, -1)) for h, r, t in triples
    ]
    array = np.array(rows, dtype=np.int64).reshape(-1, 3)
    keep = (array >= 0).all(axis=1)
    dropped = int((~keep).sum())
    if dropped:
        log.warning("%s: dropped %d triples whose entity or relation never occurs in train", path, dropped)
    return array[keep], dropped


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
    raw = {s: read_triples(directory / f"{s}.txt") for s in SPLITS}
    entities = sorted({h for h, _, _ in raw["train"]} | {t for _, _, t in raw["train"]})
    relations = sorted({r for _, r, _ in raw["train"]})
    entity_ids = {e: i for i, e in enumerate(entities)}
    relation_ids = {r: i for i, r in enumerate(relations)}

    report: dict[str, int] = {}
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        array, unseen = _encode(directory / f"{split}.txt", raw[split], entity_ids, relation_ids)
        unique = _unique_rows(array)
        report[f"{split}_duplicates"] = len(array) - len(unique)
        if split != "train":
            report[f"{split}_unseen"] = unseen
        arrays[split] = unique
    train_keys = set(map(tuple, arrays["train"].tolist()))
    for split in ("valid", "test"):
        leak = np.array([tuple(row) in train_keys for row in arrays[split].tolist()], dtype=bool)
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
