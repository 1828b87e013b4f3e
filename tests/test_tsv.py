"""Tests for kgedge.data.tsv: triples and pairs files, and errors that name the file and the line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgedge.data.tsv import KGFormatError, read_pairs, read_triples


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("a\tr\tb\nc\tr\n", 2, "expected 3 tab-separated columns"),
        ("a\tr\tb\n\nc\tr\td\te\n", 3, "found 4"),
        ("a b c\n", 1, "found 1"),
        (b"a\tr\tb\nc\tr\td\n\xff\xfe\tr\tb\n", 3, "not UTF-8"),
        ("a\tr\tb\nc\t\td\n", 2, "empty field"),
        ("a\tr\t  \n", 1, "empty field"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, content: str | bytes, line: int, problem: str) -> None:
    path = _write(tmp_path / "train.txt", content)
    with pytest.raises(KGFormatError) as info:
        read_triples(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert problem in message


@pytest.mark.parametrize("content", ["", "\n\n", "  \r\n\t\n"])
def test_file_without_triples_is_an_error_naming_the_file(tmp_path: Path, content: str) -> None:
    path = _write(tmp_path / "valid.txt", content)
    with pytest.raises(KGFormatError, match=re.escape(str(path)) + ".*no triples"):
        read_triples(path)


def test_missing_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "test.txt"
    with pytest.raises(KGFormatError, match=re.escape(str(path)) + ".*not found"):
        read_triples(path)


def test_crlf_blank_lines_and_spaces_around_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.txt", "\r\na\tr\tb\r\n\r\n  c \t r2\t d\r\n\n\ne\tr\tf")
    assert read_triples(path) == [("a", "r", "b"), ("c", "r2", "d"), ("e", "r", "f")]


def test_names_keep_inner_spaces_and_unicode(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.txt", "São Paulo\tlocated in\tBrasil 🇧🇷\n")
    assert read_triples(path) == [("São Paulo", "located in", "Brasil 🇧🇷")]


def test_read_pairs(tmp_path: Path) -> None:
    path = _write(tmp_path / "entity_types.tsv", "a\tuser\r\n\nb\titem\na\tuser\n")
    assert read_pairs(path) == {"a": "user", "b": "item"}


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("a\tuser\nb\titem\na\titem\n", 3, "'a' has two values ('user', 'item')"),
        ("a\tuser\nb\n", 2, "expected 2 tab-separated columns"),
        ("a\tuser\tx\n", 1, "expected 2 tab-separated columns"),
        ("a\t \n", 1, "expected 2 tab-separated columns"),
        (b"a\tuser\n\x80\titem\n", 2, "not UTF-8"),
    ],
)
def test_read_pairs_errors(tmp_path: Path, content: str | bytes, line: int, problem: str) -> None:
    path = _write(tmp_path / "entity_types.tsv", content)
    with pytest.raises(KGFormatError) as info:
        read_pairs(path)
    assert str(info.value).startswith(f"{path}:{line}:")
    assert problem in str(info.value)


def _check_parse_or_format_error(path: Path, raw: bytes) -> None:
    """Either triples that survive a write/read round trip, or KGFormatError; nothing else."""
    path.write_bytes(raw)
    try:
        triples = read_triples(path)
    except KGFormatError as err:
        assert str(path) in str(err)
        return
    assert triples
    for triple in triples:
        assert len(triple) == 3 and all(field and field == field.strip() for field in triple)
        assert not any("\t" in field or "\n" in field for field in triple)
    again = path.with_suffix(".again")
    again.write_text("".join("\t".join(t) + "\n" for t in triples), encoding="utf-8")
    assert read_triples(again) == triples


# Text biased toward the characters that matter: tabs, line ends, spaces, and a few words.
_pieces = st.one_of(st.sampled_from(["\t", "\n", "\r", "\r\n", " ", "a", "rel", "é", "\u2028", "\x0b"]), st.text(max_size=5))
# Line-shaped text: mostly three fields (so that many files parse), sometimes not.
_field = st.one_of(st.sampled_from(["a", "rel", " b ", "é ü", "x y", "", " ", "\r", "\x0b"]), st.text(max_size=4))
_line = st.one_of(st.lists(_field, min_size=3, max_size=3), st.lists(_field, max_size=5)).map("\t".join)
_lines = st.lists(st.tuples(_line, st.sampled_from(["\n", "\r\n", "\n\n", "\r\n  \n"])), max_size=8).map(
    lambda rows: "".join(line + end for line, end in rows)
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.lists(_pieces, max_size=40).map("".join), _lines))
def test_arbitrary_text_parses_and_round_trips_or_raises_format_error(tmp_path: Path, text: str) -> None:
    _check_parse_or_format_error(tmp_path / "train.txt", text.encode("utf-8"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_format_error(tmp_path: Path, raw: bytes) -> None:
    _check_parse_or_format_error(tmp_path / "train.txt", raw)
