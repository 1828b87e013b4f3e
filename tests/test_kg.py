"""Tests for kgedge.data.kg: vocabularies, duplicates, unseen and leaked triples, types, reciprocals."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kgedge.data.kg import KnowledgeGraph, load_kg
from kgedge.data.tsv import KGFormatError

WriteKG = Callable[..., Path]  # the write_kg fixture of conftest.py

TRAIN = [
    ("carol", "likes", "bob"),
    ("alice", "likes", "bob"),
    ("bob", "knows", "dave"),
    ("alice", "likes", "bob"),  # duplicate
    ("dave", "knows", "alice"),
    ("carol", "likes", "bob"),  # duplicate
]
VALID = [
    ("alice", "knows", "carol"),
    ("alice", "knows", "carol"),  # duplicate
    ("erin", "likes", "bob"),  # unseen head
    ("bob", "likes", "alice"),
    ("alice", "likes", "bob"),  # also in train
]
TEST = [
    ("dave", "likes", "carol"),
    ("bob", "hates", "carol"),  # unseen relation
    ("frank", "likes", "gina"),  # unseen head and tail: one triple
    ("carol", "knows", "alice"),
]


@pytest.fixture
def kg(write_kg: WriteKG) -> KnowledgeGraph:
    return load_kg(write_kg(TRAIN, VALID, TEST))


def _names(kg: KnowledgeGraph, triples: np.ndarray) -> list[tuple[str, str, str]]:
    return [(kg.entities[h], kg.relations[r], kg.entities[t]) for h, r, t in triples.tolist()]


def test_vocabularies_come_from_train_sorted(kg: KnowledgeGraph) -> None:
    assert kg.entities == ["alice", "bob", "carol", "dave"]
    assert kg.relations == ["knows", "likes"]
    assert kg.entity_ids == {"alice": 0, "bob": 1, "carol": 2, "dave": 3}
    assert kg.relation_ids == {"knows": 0, "likes": 1}
    assert kg.name == "kg"


def test_vocabulary_does_not_depend_on_line_order(write_kg: WriteKG) -> None:
    a = load_kg(write_kg(TRAIN, VALID, TEST, name="a"))
    b = load_kg(write_kg(TRAIN[::-1], VALID[::-1], TEST[::-1], name="b"))
    assert a.entities == b.entities and a.relations == b.relations
    assert sorted(_names(a, a.train)) == sorted(_names(b, b.train))


def test_splits_drop_duplicates_unseen_and_leaks_keeping_first_occurrence_order(kg: KnowledgeGraph) -> None:
    assert kg.train.dtype == np.int64 and kg.train.shape == (4, 3)
    assert _names(kg, kg.train) == [
        ("carol", "likes", "bob"), ("alice", "likes", "bob"), ("bob", "knows", "dave"), ("dave", "knows", "alice"),
    ]
    assert _names(kg, kg.valid) == [("alice", "knows", "carol"), ("bob", "likes", "alice")]
    assert _names(kg, kg.test) == [("dave", "likes", "carol"), ("carol", "knows", "alice")]
    assert kg.report == {
        "train_duplicates": 2,
        "valid_duplicates": 1,
        "valid_unseen": 1,
        "test_duplicates": 0,
        "test_unseen": 2,
        "valid_in_train": 1,
        "test_in_train": 0,
    }


def test_unseen_triples_are_dropped_with_a_warning_that_counts_them(
    write_kg: WriteKG, caplog: pytest.LogCaptureFixture
) -> None:
    directory = write_kg(TRAIN, VALID, TEST)
    with caplog.at_level(logging.WARNING, logger="kgedge.data.kg"):
        load_kg(directory)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    unseen = [m for m in messages if "never occurs in train" in m]
    assert any(m.startswith(str(directory / "valid.txt")) and "dropped 1 triples" in m for m in unseen)
    assert any(m.startswith(str(directory / "test.txt")) and "dropped 2 triples" in m for m in unseen)
    assert not any("train.txt" in m for m in unseen)
    assert any("removed 2 triples (train duplicates)" in m for m in messages)
    assert any("removed 1 triples (valid in train)" in m for m in messages)


def test_clean_kg_logs_no_warning(write_kg: WriteKG, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kgedge.data.kg"):
        kg = load_kg(write_kg(TRAIN[:3], [("alice", "knows", "carol")], [("carol", "knows", "alice")]))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert set(kg.report.values()) == {0}


@pytest.mark.parametrize("missing", ["train", "valid", "test"])
def test_missing_split_is_an_error_naming_it(write_kg: WriteKG, missing: str) -> None:
    directory = write_kg(TRAIN, VALID, TEST)
    (directory / f"{missing}.txt").unlink()
    with pytest.raises(KGFormatError, match=re.escape(f"missing split file(s) {missing}.txt")):
        load_kg(directory)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(KGFormatError, match="not a directory"):
        load_kg(tmp_path / "absent")


def test_malformed_split_error_propagates_with_file_and_line(write_kg: WriteKG) -> None:
    directory = write_kg(TRAIN, VALID, TEST)
    (directory / "test.txt").write_text("a\tb\tc\nbroken line\n", encoding="utf-8")
    with pytest.raises(KGFormatError, match=re.escape(f"{directory / 'test.txt'}:2:")):
        load_kg(directory)


def test_entity_types_read_with_untyped_default(write_kg: WriteKG) -> None:
    types = {"alice": "person", "bob": "person", "dave": "robot", "zed": "ghost"}  # carol untyped, zed unknown
    kg = load_kg(write_kg(TRAIN, VALID, TEST, types=types))
    assert kg.type_names == ["entity", "person", "robot"]
    assert [kg.type_names[t] for t in kg.entity_types] == ["person", "person", "entity", "robot"]
    assert kg.entity_types.shape == (kg.num_entities,)


def test_without_types_file_every_entity_has_one_type(kg: KnowledgeGraph) -> None:
    assert kg.type_names == ["entity"]
    assert kg.entity_types.tolist() == [0] * kg.num_entities


def test_reciprocals_shape_and_values(kg: KnowledgeGraph) -> None:
    both = kg.with_reciprocals(kg.train)
    n, num_rel = len(kg.train), kg.num_relations
    assert both.shape == (2 * n, 3)
    np.testing.assert_array_equal(both[:n], kg.train)
    np.testing.assert_array_equal(both[n:, 0], kg.train[:, 2])
    np.testing.assert_array_equal(both[n:, 1], kg.train[:, 1] + num_rel)
    np.testing.assert_array_equal(both[n:, 2], kg.train[:, 0])


def test_known_filter_holds_every_split_in_both_directions(kg: KnowledgeGraph) -> None:
    e, r = kg.entity_ids, kg.relation_ids
    inverse = r["knows"] + kg.num_relations
    assert set(kg.known.tails_of(e["alice"], r["knows"]).tolist()) == {e["carol"]}  # valid
    assert set(kg.known.tails_of(e["alice"], inverse).tolist()) == {e["dave"], e["carol"]}  # train + test
    assert set(kg.known_train.tails_of(e["alice"], inverse).tolist()) == {e["dave"]}
    assert kg.known_train.tails_of(e["alice"], r["knows"]).size == 0


def test_split_accessor(kg: KnowledgeGraph) -> None:
    assert kg.split("valid") is kg.valid
    with pytest.raises(ValueError, match="unknown split 'dev'; choose one of train, valid, test"):
        kg.split("dev")  # type: ignore[arg-type]


def test_stats(write_kg: WriteKG) -> None:
    kg = load_kg(write_kg(TRAIN, VALID, TEST, types={"alice": "person", "bob": "person"}), name="tiny")
    stats = kg.stats()
    assert stats == {
        "name": "tiny",
        "entities": 4,
        "relations": 2,
        "train": 4,
        "valid": 2,
        "test": 2,
        "types": {"entity": 2, "person": 2},
        "train_per_relation": {"knows": 2, "likes": 2},
        "dropped": kg.report,
    }
    assert stats["dropped"] is not kg.report  # a copy: callers may not change the KG through it


def _check_against_the_files(directory: Path, kg: KnowledgeGraph) -> None:
    """Recount the files independently: vocab, dedup, unseen and leak removal must agree."""
    rows = {
        s: [tuple(f.strip() for f in line.split("\t")) for line in (directory / f"{s}.txt").read_text("utf-8").splitlines()
            if line.strip()]
        for s in ("train", "valid", "test")
    }
    train = set(rows["train"])
    entities = {h for h, _, _ in train} | {t for _, _, t in train}
    relations = {r for _, r, _ in train}
    assert kg.entities == sorted(entities) and kg.relations == sorted(relations)
    assert set(_names(kg, kg.train)) == train and len(kg.train) == len(train)
    for split in ("valid", "test"):
        kept = {t for t in rows[split] if t[0] in entities and t[2] in entities and t[1] in relations} - train
        assert set(_names(kg, kg.split(split))) == kept and len(kg.split(split)) == len(kept)


@pytest.mark.parametrize("name", ["nations", "umls"])
def test_small_real_datasets_load(real_dataset: Callable[[str], Path], name: str) -> None:
    directory = real_dataset(name)
    _check_against_the_files(directory, load_kg(directory))


@pytest.mark.slow
def test_wordnet_rr_loads(real_dataset: Callable[[str], Path]) -> None:
    directory = real_dataset("wordnet-rr")
    kg = load_kg(directory)
    _check_against_the_files(directory, kg)
    assert kg.num_entities > 40_000 and kg.num_relations == 11
