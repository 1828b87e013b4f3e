"""Tests for the synthetic shop KG generator: determinism, schema, splits, atomic writes, learnability."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from kgedge.data.generate import (
    ENTITY_TYPES,
    EVAL_RELATIONS,
    RELATION_SCHEMA,
    RELATIONS,
    ShopConfig,
    ShopKG,
    generate_shop_kg,
    write_shop_kg,
)

FILES = ("train.txt", "valid.txt", "test.txt", "entity_types.tsv", "README.md")


@pytest.fixture(scope="module")
def kg() -> ShopKG:
    return generate_shop_kg(ShopConfig(num_entities=2000, seed=0))


def _rows(kg: ShopKG) -> dict[str, set[tuple[str, str, str]]]:
    return {name: {tuple(row) for row in getattr(kg, name)} for name in ("train", "valid", "test")}


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_entities", 199, r"num_entities=199.*200"),
        ("num_entities", 5_000_001, r"num_entities=5000001.*5_000_000"),
        ("seed", -1, r"seed=-1"),
        ("taste_size", 0, r"taste_size=0"),
        ("valid_fraction", 0.0, r"valid_fraction=0.0"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShopConfig(**{field: value})


def test_entity_count_and_types(kg: ShopKG) -> None:
    assert abs(len(kg.entity_types) - 2000) <= 5
    by_type = defaultdict(int)
    for name, etype in kg.entity_types.items():
        assert name.startswith(etype + "_") and name.rsplit("_", 1)[1].isdigit()
        by_type[etype] += 1
    assert set(by_type) == set(ENTITY_TYPES)
    assert 0.35 * 2000 <= by_type["user"] <= 0.55 * 2000
    assert min(by_type.values()) >= 5


def test_every_entity_occurs_in_train_and_degree_is_realistic(kg: ShopKG) -> None:
    in_train = set(kg.train[:, 0]) | set(kg.train[:, 2])
    held_out = np.concatenate([kg.valid, kg.test])
    assert set(held_out[:, 0]) | set(held_out[:, 2]) <= in_train
    assert in_train == set(kg.entity_types)  # no isolated entity
    assert set(kg.train[:, 1]) == set(RELATIONS)
    total = len(kg.train) + len(kg.valid) + len(kg.test)
    assert 10_000 <= total <= 15_000  # average degree ~10-15


def test_splits_are_disjoint_without_duplicates(kg: ShopKG) -> None:
    rows = _rows(kg)
    for name, triples in rows.items():
        assert len(triples) == len(getattr(kg, name)), f"duplicates in {name}"
    assert not rows["train"] & rows["valid"]
    assert not rows["train"] & rows["test"]
    assert not rows["valid"] & rows["test"]


def test_eval_relations_are_split_about_90_5_5(kg: ShopKG) -> None:
    for relation in EVAL_RELATIONS:
        counts = [int(np.sum(split[:, 1] == relation)) for split in (kg.train, kg.valid, kg.test)]
        assert counts[1] > 0 and counts[2] > 0, relation
        assert 0.03 <= counts[2] / sum(counts) <= 0.07, (relation, counts)
    assert set(kg.valid[:, 1]) <= set(EVAL_RELATIONS)


def test_relations_follow_the_schema(kg: ShopKG) -> None:
    for split in (kg.train, kg.valid, kg.test):
        for head, relation, tail in split:
            heads, tails = RELATION_SCHEMA[relation]
            assert kg.entity_types[head] in heads, (head, relation, tail)
            assert kg.entity_types[tail] in tails, (head, relation, tail)


def test_items_have_one_category_and_brand(kg: ShopKG) -> None:
    for relation in ("belongs_to", "made_by"):
        heads = kg.train[kg.train[:, 1] == relation, 0]
        items = [e for e, t in kg.entity_types.items() if t in ("product", "accessory")]
        assert sorted(heads) == sorted(items)


def test_files_are_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    config = ShopConfig(num_entities=300, seed=3)
    write_shop_kg(generate_shop_kg(config), tmp_path / "a")
    write_shop_kg(generate_shop_kg(config), tmp_path / "b")
    write_shop_kg(generate_shop_kg(ShopConfig(num_entities=300, seed=4)), tmp_path / "c")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "train.txt").read_bytes() != (tmp_path / "c" / "train.txt").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary leftovers


def test_file_format(kg: ShopKG, tmp_path: Path) -> None:
    out = tmp_path / "shop"
    write_shop_kg(kg, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in ("train", "valid", "test"):
        text = (out / f"{name}.txt").read_text(encoding="utf-8")
        lines = text.split("\n")
        assert lines[-1] == "" and "\r" not in text
        assert [tuple(line.split("\t")) for line in lines[:-1]] == [tuple(r) for r in getattr(kg, name)]
    types = (out / "entity_types.tsv").read_text(encoding="utf-8").splitlines()
    assert dict(line.split("\t") for line in types) == kg.entity_types
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "num_entities | 2000" in readme and "seed | 0" in readme


def test_write_refuses_non_empty_dir_unless_overwrite(kg: ShopKG, tmp_path: Path) -> None:
    out = tmp_path / "shop"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty.*overwrite=True"):
        write_shop_kg(kg, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    write_shop_kg(kg, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop"]  # temp and old dirs cleaned up


def test_write_into_existing_empty_dir(kg: ShopKG, tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    write_shop_kg(kg, tmp_path / "shop")
    assert (tmp_path / "shop" / "train.txt").stat().st_size > 0


def test_bought_structure_is_learnable(kg: ShopKG) -> None:
    """Held-out purchases share a category with the user's train purchases far more than random items."""
    category = {h: t for h, r, t in kg.train if r == "belongs_to"}
    products = np.array(sorted(e for e, t in kg.entity_types.items() if t == "product"))
    train_cats: dict[str, set[str]] = defaultdict(set)
    for user, relation, item in kg.train:
        if relation == "bought":
            train_cats[user].add(category[item])
    test_bought = [(u, i) for u, r, i in kg.test if r == "bought"]
    rng = np.random.default_rng(0)
    random_items = rng.choice(products, size=len(test_bought))
    hit = np.mean([category[i] in train_cats[u] for u, i in test_bought])
    chance = np.mean([category[i] in train_cats[u] for (u, _), i in zip(test_bought, random_items)])
    assert hit > 0.5 and hit > 3 * chance, (hit, chance)  # seed 0: ~0.68 vs ~0.15


def test_popularity_is_skewed(kg: ShopKG) -> None:
    bought = kg.train[kg.train[:, 1] == "bought", 2]
    _, counts = np.unique(bought, return_counts=True)
    top = np.sort(counts)[::-1]
    assert top[: len(top) // 10].sum() > 0.3 * top.sum()  # top 10% of items take > 30% of purchases
