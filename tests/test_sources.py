"""Tests for kgedge.data.sources: directories, built-in names, $KGEDGE_DATA and the cached demo KG."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kgedge.data import generate, sources
from kgedge.data.sources import REAL_DATASETS, builtin_names, load_data, resolve_data
from kgedge.data.tsv import KGFormatError

WriteKG = Callable[..., Path]  # the write_kg fixture of conftest.py


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real cache, data folder or PyKEEN copy leaks in: every test sets what it needs."""
    monkeypatch.setenv("KGEDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KGEDGE_DATA", str(tmp_path / "no-data-here"))
    monkeypatch.setattr(sources, "pykeen_dataset_dir", lambda name: None)


def test_builtin_names() -> None:
    assert builtin_names() == ["demo", "nations", "umls", "wordnet-rr"]


def test_a_directory_resolves_to_itself(write_kg: WriteKG) -> None:
    directory = write_kg([("a", "r", "b")], [("b", "r", "a")], [("a", "r", "b")], name="mine")
    assert resolve_data(directory) == directory
    assert resolve_data(str(directory)) == directory
    assert load_data(str(directory)).name == "mine"


def test_unknown_name_lists_the_builtin_names() -> None:
    with pytest.raises(KGFormatError) as info:
        resolve_data("freebase")
    message = str(info.value)
    assert "'freebase' is neither a directory nor a built-in dataset" in message
    for name in builtin_names():
        assert name in message


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_missing_real_dataset_mentions_kgedge_data(tmp_path: Path, name: str) -> None:
    with pytest.raises(KGFormatError) as info:
        resolve_data(name)
    message = str(info.value)
    assert "KGEDGE_DATA" in message
    assert str((tmp_path / "no-data-here").resolve()) in message
    assert f"{name}/train.txt" in message


@pytest.mark.parametrize("name", REAL_DATASETS)
def test_real_dataset_is_read_from_kgedge_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_kg: WriteKG, name: str
) -> None:
    write_kg([("a", "r", "b"), ("b", "r", "c")], [("c", "r", "a")], [("a", "r", "c")], name=f"shared/{name}")
    monkeypatch.setenv("KGEDGE_DATA", str(tmp_path / "shared"))
    assert resolve_data(name) == tmp_path / "shared" / name
    kg = load_data(name)
    assert kg.name == name and kg.entities == ["a", "b", "c"]


def test_data_root_default_is_relative_to_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KGEDGE_DATA")
    assert sources.data_root() == Path("../shared/data")


def test_demo_is_generated_into_kgedge_cache_and_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    directory = resolve_data("demo")
    assert directory.parent == tmp_path / "cache"
    assert {p.name for p in directory.iterdir()} >= {"train.txt", "valid.txt", "test.txt", "entity_types.tsv"}
    first = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}

    def no_second_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo KG was generated again instead of reused")

    monkeypatch.setattr(generate, "generate_shop_kg", no_second_generation)
    assert resolve_data("demo") == directory
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()} == first
    kg = load_data("demo")
    assert kg.name == "demo"
    assert kg.num_entities == sources.DEMO_ENTITIES
    assert "user" in kg.type_names and "bought" in kg.relations


def test_demo_is_the_generator_output_for_its_seed(tmp_path: Path) -> None:
    directory = resolve_data("demo")
    expected = generate.generate_shop_kg(generate.ShopConfig(num_entities=sources.DEMO_ENTITIES, seed=sources.DEMO_SEED))
    generate.write_shop_kg(expected, tmp_path / "fresh")
    for name in ("train.txt", "valid.txt", "test.txt", "entity_types.tsv"):
        assert (directory / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_cache_root_defaults_under_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KGEDGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sources.cache_root() == tmp_path / "xdg" / "kgedge"


def test_a_local_directory_wins_over_a_builtin_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_kg: WriteKG
) -> None:
    write_kg([("a", "r", "b")], [("b", "r", "a")], [("a", "r", "b")], name="work/umls")
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_data("umls") == Path("umls")
    assert os.path.samefile(resolve_data("umls"), tmp_path / "work" / "umls")
