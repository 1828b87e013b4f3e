"""Reading ``head<TAB>relation<TAB>tail`` files with errors that name the file, line and problem."""

from __future__ import annotations

from pathlib import Path


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
