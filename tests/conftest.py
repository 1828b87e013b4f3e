"""Shared fixtures: where the real data sets live, and tiny hand-made KGs written to ``tmp_path``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# The tests use tiny tensors: on a small shared CPU, torch's intra-op threads spin against each other
# and make a 30 ms training run take 2 s. One thread, unless the caller chose otherwise. Set before any
# test module imports torch (subprocesses inherit it too).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # imported early by a plugin: the variable came too late
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

Triple = tuple[str, str, str]
WriteKG = Callable[..., Path]


def resolve_data_root() -> Path:
    """``$KGEDGE_DATA``, else ``../shared/data`` relative to the repo root (not the working directory)."""
    configured = os.environ.get("KGEDGE_DATA")
    return Path(configured) if configured else REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding the real data sets (nations, umls, wordnet-rr); skips the test when absent."""
    root = resolve_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}; set KGEDGE_DATA")
    return root


@pytest.fixture(scope="session")
def real_dataset(data_root: Path) -> Callable[[str], Path]:
    """``real_dataset("umls")``: that data set's directory, or a skip when it is missing."""

    def find(name: str) -> Path:
        directory = data_root / name
        if not (directory / "train.txt").is_file():
            pytest.skip(f"{name} not found under {data_root}; set KGEDGE_DATA")
        return directory

    return find


def _lines(triples: Iterable[Triple]) -> str:
    return "".join("\t".join(t) + "\n" for t in triples)


@pytest.fixture
def write_kg(tmp_path: Path) -> WriteKG:
    """``write_kg(train, valid, test, types=None, name="kg")``: a KG directory under ``tmp_path``."""

    def write(
        train: Iterable[Triple],
        valid: Iterable[Triple],
        test: Iterable[Triple],
        types: dict[str, str] | None = None,
        name: str = "kg",
    ) -> Path:
        directory = tmp_path / name
        directory.mkdir(parents=True)
        for split, triples in (("train", train), ("valid", valid), ("test", test)):
            (directory / f"{split}.txt").write_text(_lines(triples), encoding="utf-8")
        if types is not None:
            (directory / "entity_types.tsv").write_text(
                "".join(f"{e}\t{t}\n" for e, t in types.items()), encoding="utf-8"
            )
        return directory

    return write


def permutation_triples(n: int = 40, copies: int = 3, seed: int = 0) -> dict[str, list[Triple]]:
    """A learnable KG: ``copies`` relations ``r0..`` that all map ``x_i`` to ``y_{perm(i)}``.

    A third of the pairs are held out of one relation (half to valid, half to test) while the other
    relations keep them in train, so a model that learns "the relations agree" ranks held-out tails
    first, and a random model ranks them near the middle of ``2 n`` entities.
    """
    rng = np.random.default_rng(seed)
    perm, held = rng.permutation(n), rng.permutation(n)
    splits: dict[str, list[Triple]] = {"train": [], "valid": [], "test": []}
    for i in range(n):
        for c in range(copies):
            split = "train"
            if c == i % copies and held[i] < n // 3:
                split = "valid" if held[i] % 2 else "test"
            splits[split].append((f"x{i:03d}", f"r{c}", f"y{perm[i]:03d}"))
    return splits


@pytest.fixture
def permutation_kg_dir(write_kg: WriteKG) -> Path:
    """:func:`permutation_triples` (40 pairs, 80 entities, 3 relations) written to ``tmp_path``."""
    s = permutation_triples()
    return write_kg(s["train"], s["valid"], s["test"], name="perm")


@pytest.fixture(scope="session")
def permutation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`permutation_triples` written once per session; tests must not modify it."""
    directory = tmp_path_factory.mktemp("perm") / "perm"
    directory.mkdir()
    for split, rows in permutation_triples().items():
        (directory / f"{split}.txt").write_text("".join("\t".join(t) + "\n" for t in rows), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def permutation_kg(permutation_dir: Path):  # noqa: ANN201 (KnowledgeGraph; imported lazily)
    """:func:`permutation_triples` loaded (80 entities, 3 relations), shared by the model tests."""
    from kgedge.data.kg import load_kg

    return load_kg(permutation_dir)

