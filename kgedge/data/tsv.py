"""Reading ``head<TAB>relation<TAB>tail`` files with errors that name the file, line and problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class KGFormatError(ValueError):
    """A KG file cannot be read; the message names the file, the line and what to fix."""


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise KGFormatError(
            f"{path}:{line}: bytes that are not UTF-8 ({raw[err.start:err.start + 4]!r}); "
            "save the file as UTF-8"
        ) from None


def read_triples(path: Path) -> list[tuple[str, str, str]]:
    """Read one split file of tab-separated triples.

    Blank lines are skipped; a trailing ``\\r`` (Windows line ends) is stripped; fields are stripped of
    surrounding spaces.

    Raises:
        KGFormatError: missing or empty file, non-UTF-8 bytes, a line without exactly three fields,
            or an empty field.
    """
    if not path.is_file():
        raise KGFormatError(f"{path}: file not found")
    text = _decode(path, path.read_bytes())
    triples: list[tuple[str, str, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise KGFormatError(
                f"{path}:{number}: expected 3 tab-separated columns (head, relation, tail), "
                f"found {len(fields)}: {line[:80]!r}"
            )
        head, relation, tail = (field.strip() for field in fields)
        if not (head and relation and tail):
            raise KGFormatError(f"{path}:{number}: empty field in {line[:80]!r}")
        triples.append((head, relation, tail))
    if not triples:
        raise KGFormatError(f"{path}: the file holds no triples")
    return triples


def read_pairs(path: Path) -> dict[str, str]:
    """Read a two-column ``key<TAB>value`` file (e.g. ``entity_types.tsv``).

    Raises:
        KGFormatError: non-UTF-8 bytes, a line without two fields, or a key given two values.
    """
    text = _decode(path, path.read_bytes())
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("\t")]
        if len(fields) != 2 or not all(fields):
            raise KGFormatError(f"{path}:{number}: expected 2 tab-separated columns, got {line[:80]!r}")
        key, value = fields
        if pairs.get(key, value) != value:
            raise KGFormatError(f"{path}:{number}: {key!r} has two values ({pairs[key]!r}, {value!r})")
        pairs[key] = value
    return pairs


# bytes the vectorised reader accepts: printable ASCII without the space (no field needs stripping)
_PLAIN = np.zeros(256, dtype=bool)
_PLAIN[0x21:0x7F] = True
_PLAIN[[ord("\t"), ord("\n")]] = True


def read_triple_array(path: Path) -> np.ndarray:
    """:func:`read_triples` as an object array of names, shape ``(n, 3)``; fast on large files.

    A file of printable ASCII without spaces, ``\\r`` or blank lines whose every line holds three
    non-empty tab-separated fields (the usual case) is checked with numpy and split in C: 10M triples
    in seconds and about a third of the memory of a list of tuples. Any other file goes through
    :func:`read_triples`, which gives the same result or names the offending line.

    Raises:
        KGFormatError: as :func:`read_triples`.
    """
    if not path.is_file():
        raise KGFormatError(f"{path}: file not found")
    raw = path.read_bytes()
    data = np.frombuffer(raw, dtype=np.uint8)
    if len(data) == 0 or not _PLAIN[data].all():
        return _as_array(read_triples(path))
    ends = np.flatnonzero(data == ord("\n"))
    if data[-1] != ord("\n"):
        ends = np.append(ends, len(data))  # a last line without a line end
    starts = np.concatenate([[0], ends[:-1] + 1])
    tabs = np.flatnonzero(data == ord("\t"))
    if (starts == ends).any() or len(tabs) != 2 * len(ends):  # blank lines, or a line with != 2 tabs
        return _as_array(read_triples(path))
    first, second = tabs[0::2], tabs[1::2]
    # the i-th pair of tabs inside line i with a byte before, between and after them: as many tabs as
    # 2 per line, so that is exactly two tabs per line and no empty field
    if not ((starts < first) & (first + 1 < second) & (second + 1 < ends)).all():
        return _as_array(read_triples(path))
    del data, ends, starts, tabs, first, second
    fields = raw.decode("ascii").split()  # no other whitespace than the tabs and line ends checked above
    return np.array(fields, dtype=object).reshape(-1, 3)


def _as_array(triples: list[tuple[str, str, str]]) -> np.ndarray:
    array = np.empty((len(triples), 3), dtype=object)
    array[:] = triples
    return array
