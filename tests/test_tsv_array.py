"""Tests for the vectorised KG loading path: ``read_triple_array`` agrees with ``read_triples`` on any
text (same triples or the same error), and the int64-key dedup / leak check agree with Python sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgedge.data.kg import _rows_in, _unique_rows
from kgedge.data.tsv import KGFormatError, read_triple_array, read_triples

# few symbols, so that tabs, line ends, blanks, spaces, \r and non-ASCII collide often
TEXT = st.text(alphabet=["a", "b", "\t", "\n", "\r", " ", "é"], max_size=60)


def _outcome(reader, path: Path):  # noqa: ANN001, ANN202
    try:
        return [tuple(row) for row in reader(path)]
    except KGFormatError as err:
        return str(err)


@settings(max_examples=400, deadline=None)
@given(text=TEXT)
def test_array_reader_gives_the_triples_or_the_error_of_the_line_reader(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("tsv") / "train.txt"
    path.write_text(text, encoding="utf-8")
    assert _outcome(read_triple_array, path) == _outcome(read_triples, path)


@pytest.mark.parametrize("text", ["a\tr\tb\nc\tr\td\n", "a\tr\tb\nc\tr\td", "e1\t/r/x\te2\n" * 3])
def test_plain_files_take_the_vectorised_path(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    expected = read_triples(path)
    monkeypatch.setattr("kgedge.data.tsv.read_triples", lambda p: pytest.fail("fell back to the line reader"))
    array = read_triple_array(path)
    assert array.dtype == object and array.shape == (len(expected), 3)
    assert [tuple(r) for r in array] == expected


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 60), m=st.integers(0, 30))
def test_int64_keys_dedup_and_leak_check_agree_with_sets(seed: int, n: int, m: int) -> None:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, [5, 3, 5], size=(n, 3))
    other = rng.integers(0, [5, 3, 5], size=(m, 3))
    unique = _unique_rows(rows, 5, 3)
    first: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(map(tuple, rows.tolist())):
        first.setdefault(row, i)
    assert unique.tolist() == rows[sorted(first.values())].tolist()
    known = set(map(tuple, other.tolist()))
    assert _rows_in(rows, other, 5, 3).tolist() == [tuple(r) in known for r in rows.tolist()]
