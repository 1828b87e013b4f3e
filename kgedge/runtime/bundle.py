"""Reading a bundle: manifest checks, size + sha256 of every file, then the vocabularies and indexes.

Nothing here trusts the files: every name in the manifest must be a plain file name inside the
bundle directory (no ``/``, no ``..``, no symlink), and every file is opened once, checked against
its size and sha256, and only then parsed.

What was verified is what is used, with one trade-off for memory. ``model.onnx`` is read into memory
and the session is built from those bytes. The other files (entity names, seen-items index: hundreds
of MiB at 1M entities) are memory-mapped read-only through the descriptor that was checked, hashed
and checked chunk by chunk, and the pages touched by those passes are dropped from the process's
resident memory afterwards (``MADV_DONTNEED``: the map reads them again from the file when a query
needs them). A map shows the file as it is, so a file rewritten *in place* after the load would be
seen changed (or, cut short, crash the process on access). The device owns the bundle files, and
``kgedge export`` replaces a bundle by renaming a new directory over it, which leaves the mapped
files intact; the checks at load still catch a corrupted or tampered copy. An archive is extracted
to a temporary folder that is deleted at once: its mapped files live on, unlinked, until the model
is dropped.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import mmap
import operator
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from kgedge.data.index import STORED_ID_DTYPES, KnownTails
from kgedge.runtime.archive import extracted, is_archive
from kgedge.runtime.errors import BundleError
from kgedge.runtime.vocab import INVERSE_SUFFIX, FileBytes, PackedNames

log = logging.getLogger(__name__)

FORMAT: Final = "kgedge-bundle"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
#: sha256 of the manifest's own content (see :func:`manifest_digest`); checked when present.
MANIFEST_DIGEST: Final = "manifest_sha256"
#: Seen items added on the device; beside the model, never in the manifest (it changes after export).
OVERLAY: Final = "seen_overlay.tsv"
REQUIRED_FILES: Final = ("model.onnx", "entities.txt", "relations.txt", "entity_types.npy",
                         "known_keys.npy", "known_offsets.npy", "known_tails.npy")
REQUIRED_KEYS: Final = ("format", "format_version", "kgedge_version", "created_utc", "model", "num_entities",
                        "num_relations", "types", "profile", "session", "graph", "files", "sizes", "validation")
#: Files read into memory: onnxruntime builds its session from bytes, and every query reads all of
#: ``entity_types.npy`` (4 bytes per entity), so a map of it would be resident anyway. The other files
#: are memory-mapped.
IN_MEMORY: Final = ("model.onnx", "entity_types.npy")
#: Bytes hashed or checked at a time; the pages of one chunk are dropped before the next is read.
CHUNK_BYTES: Final = 8 << 20
# Bytes of names checked at a time: the sort check makes a bytes object per line, ~5x the chunk
_NAME_CHUNK_BYTES = 1 << 20
#: Integer dtypes used as they are (the exporter writes these); others are converted to int64.
_KEPT_DTYPES: Final = tuple(np.dtype(d) for d in STORED_ID_DTYPES)
_NPY_HEADER_MAX = 65_536  # np.load's limit is 10,000 bytes of header text
#: kgedge writes a few KiB (names and indexes live in their own files)
MAX_MANIFEST_BYTES: Final = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REEXPORT = "re-export the bundle with `kgedge export`"


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle: ``model.onnx`` in memory, the names and arrays mapped from their files.

    Attributes:
        source: the directory or archive it was read from.
        manifest: the parsed ``manifest.json``.
        model: the bytes of ``model.onnx``.
        entities: entity names by id, ``N`` of them, decoded on access from ``entities.txt``.
        relations: data relation names by id, ``R`` of them (inverses are ids ``R..2R-1``).
        types: entity type names by type id.
        entity_types: shape ``(N,)`` type id of each entity (read-only; uint8 from current exports).
        known: train triples in both directions, keys ``head * 2R + relation`` (read-only arrays in
            the dtype the bundle stores them: the narrowest of uint8, uint16, int32, int64).
        overlay_path: where on-device seen items are persisted.
        overlays: ``(label, text)`` of existing overlay files to apply, in order.
    """

    source: Path
    manifest: dict[str, Any]
    model: bytes
    entities: PackedNames
    relations: tuple[str, ...]
    types: tuple[str, ...]
    entity_types: np.ndarray
    known: KnownTails
    overlay_path: Path
    overlays: tuple[tuple[str, str], ...]


def read_bundle(path: Path) -> Bundle:
    """Read and verify a bundle directory or a ``.tar``/``.tar.gz`` of one.

    For an archive, seen items added on the device go to ``ARCHIVE.seen_overlay.tsv`` beside it.

    Raises:
        BundleError: anything wrong with the bundle; the message names the file.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bundle directory or archive")
    if path.is_dir():
        overlay = path / OVERLAY
        return _read_dir(path, path, overlay, _existing([overlay]))
    if not is_archive(path):
        raise BundleError(f"{path}: not a bundle directory nor a .tar/.tar.gz archive")
    overlay = path.with_name(f"{path.name}.{OVERLAY}")
    with extracted(path) as root:
        inner = _existing([root / OVERLAY], label=f"{path}!/{OVERLAY}")
        try:
            return _read_dir(root, path, overlay, inner + _existing([overlay]))
        except BundleError as err:  # name the file inside the archive, not the temporary folder
            raise BundleError(str(err).replace(str(root), f"{path}!")) from None


def _existing(paths: list[Path], label: str | None = None) -> tuple[tuple[str, str], ...]:
    found = []
    for p in paths:
        if p.is_symlink():
            raise BundleError(f"{p}: a symlink; the seen overlay must be a plain file")
        if p.is_file():
            try:
                found.append((label or str(p), p.read_text(encoding="utf-8")))
            except UnicodeDecodeError:
                raise BundleError(f"{label or p}: not UTF-8; fix or delete the file") from None
    return tuple(found)


def _read_dir(root: Path, source: Path, overlay_path: Path, overlays: tuple[tuple[str, str], ...]) -> Bundle:
    manifest = read_manifest(root)
    blobs = verify_files(root, manifest)
    n, r = manifest["num_entities"], manifest["num_relations"]
    entities = _names(blobs, "entities.txt", root, n)
    relations = tuple(_names(blobs, "relations.txt", root, r))
    clash = sorted(set(relations) & {f"{x}{INVERSE_SUFFIX}" for x in relations})
    if clash:
        raise BundleError(f"{root / 'relations.txt'}: {clash} would clash with the inverse names NAME^-1; "
                          "rename those relations in the data and re-train")
    types = tuple(manifest["types"])
    entity_types = _array(blobs, "entity_types.npy", root, (n,), 0, len(types))
    keys = _array(blobs, "known_keys.npy", root, None, 0, n * 2 * r,
                  order=("strictly", "keys are not strictly increasing"))
    not_an_index = "offsets do not index known_tails.npy"
    offsets = _array(blobs, "known_offsets.npy", root, (len(keys) + 1,), 0, None, order=("weakly", not_an_index))
    tails = _array(blobs, "known_tails.npy", root, None, 0, n)
    if offsets[0] != 0 or offsets[-1] != len(tails):
        raise BundleError(f"{root / 'known_offsets.npy'}: {not_an_index}; {_REEXPORT}")
    # the exporter saved exactly KnownTails' arrays: no rebuild, no copy
    known = KnownTails.from_arrays(keys, offsets, tails, 2 * r)
    log.info("bundle %s: %d entities, %d relations, %d known pairs", source, n, r, len(tails))
    return Bundle(source, manifest, blobs["model.onnx"], entities, relations, types, entity_types,
                  known, overlay_path, overlays)


def read_manifest(root: Path) -> dict[str, Any]:
    """Parse and check ``root/manifest.json`` (format, version, required keys, counts, file names).

    Raises:
        BundleError: missing, a symlink, not JSON, another format or version, content that does not
            match its ``manifest_sha256``, or a bad field (``sizes.bundle_bytes`` included).
    """
    where = root / MANIFEST
    if where.is_symlink() or not where.is_file():
        raise BundleError(f"{where}: missing (or not a plain file); is {root} a bundle made by `kgedge export`?")
    size = where.stat().st_size
    if size > MAX_MANIFEST_BYTES:  # kgedge writes a few KiB whatever the model's size: never parse a giant
        raise BundleError(f"{where}: {size:,} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES:,}); {_REEXPORT}")
    try:
        manifest = json.loads(where.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, an int of > 4300 digits, deep nesting
        raise BundleError(f"{where}: not valid UTF-8 JSON ({err}); {_REEXPORT}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: 'format' is not {FORMAT!r}; this is not a kgedge bundle")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise BundleError(
            f"{where}: format_version {version!r} is not supported by this runtime (it reads version "
            f"{FORMAT_VERSION}); upgrade kgedge on the device or export with a matching kgedge"
        )
    if MANIFEST_DIGEST in manifest:  # absent in bundles written before it existed
        try:
            intact = manifest[MANIFEST_DIGEST] == manifest_digest(manifest)
        except RecursionError:  # nesting that json.loads just managed to read
            intact = False
        if not intact:
            raise BundleError(f"{where}: {MANIFEST_DIGEST} does not match the manifest's content; the manifest "
                              f"is corrupted or was edited: copy the bundle again or {_REEXPORT}")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{where}: missing keys {missing}; {_REEXPORT}")
    for key in ("model", "profile", "session", "graph", "sizes", "validation"):
        if not isinstance(manifest[key], dict):
            raise BundleError(f"{where}: {key!r} must be an object; {_REEXPORT}")
    for key in ("num_entities", "num_relations"):
        value = manifest[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BundleError(f"{where}: {key}={value!r} must be a positive int; {_REEXPORT}")
    types = manifest["types"]
    if (not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types)
            or len(set(types)) != len(types)):
        raise BundleError(f"{where}: 'types' must be a non-empty list of unique names; {_REEXPORT}")
    _check_files_entry(manifest["files"], where)
    total, declared = sum(e["bytes"] for e in manifest["files"].values()), manifest["sizes"].get("bundle_bytes")
    if isinstance(declared, bool) or declared != total:
        raise BundleError(f"{where}: sizes.bundle_bytes={declared!r} but its files add up to {total:,} bytes; {_REEXPORT}")
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its ``manifest_sha256``: canonical JSON (sorted keys, no spaces).

    ``kgedge.export.bundle`` computes the same digest when it writes the manifest.
    """
    body = {key: value for key, value in manifest.items() if key != MANIFEST_DIGEST}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _check_files_entry(files: Any, where: Path) -> None:
    if not isinstance(files, dict):
        raise BundleError(f"{where}: 'files' must be an object of file name -> {{sha256, bytes}}; {_REEXPORT}")
    for name, entry in files.items():
        if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
                or os.path.isabs(name) or name == MANIFEST):
            raise BundleError(f"{where}: file name {name!r} is not a plain file name inside the bundle; refusing it")
        if name == OVERLAY:
            raise BundleError(f"{where}: {OVERLAY} changes on the device and must not be checksummed; {_REEXPORT}")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not _SHA256.match(entry["sha256"]) or isinstance(entry.get("bytes"), bool)
                or not isinstance(entry.get("bytes"), int) or entry["bytes"] < 0):
            raise BundleError(f"{where}: files[{name!r}] needs a hex 'sha256' and an int 'bytes'; {_REEXPORT}")
    absent = [name for name in REQUIRED_FILES if name not in files]
    if absent:
        raise BundleError(f"{where}: 'files' does not cover {absent}; every bundle file must be checksummed; {_REEXPORT}")


def verify_files(root: Path, manifest: dict[str, Any]) -> dict[str, FileBytes]:
    """Open every file of ``manifest["files"]`` and check its size (bytes) and sha256.

    Returns:
        file name -> content, exactly the verified bytes: ``bytes`` for the files of
        :data:`IN_MEMORY`, a read-only ``mmap`` of the checked descriptor for the others (see the
        module docstring for what that trades). The pages read for the checksum are dropped from
        resident memory again.

    Raises:
        BundleError: a file is missing, a symlink, outside ``root``, or of another size or checksum.
    """
    real_root = os.path.realpath(root)
    blobs: dict[str, FileBytes] = {}
    for name, entry in manifest["files"].items():
        path = root / name
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise BundleError(f"{path}: listed in the manifest but missing; copy the whole bundle again") from None
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path}: a symlink or not a regular file; bundles hold plain files only")
        if os.path.dirname(os.path.realpath(path)) != real_root:
            raise BundleError(f"{path}: resolves outside the bundle directory; refusing it")
        # the size before reading: a file far larger than the manifest says is never read into memory
        if info.st_size != entry["bytes"]:
            raise _size_error(path, info.st_size, entry["bytes"])
        data = _open(path, entry["bytes"], in_memory=name in IN_MEMORY)
        if _sha256(data) != entry["sha256"]:
            raise BundleError(f"{path}: sha256 differs from the manifest; the file is corrupted or was "
                              "modified: copy the bundle again")
        blobs[name] = data
    return blobs


def _size_error(path: Path, size: int, expected: int) -> BundleError:
    return BundleError(f"{path}: {size:,} bytes, the manifest says {expected:,}; "
                       "the file is truncated or changed: copy the bundle again")


def _open(path: Path, size: int, in_memory: bool) -> FileBytes:
    """The content of the regular file ``path`` of ``size`` bytes: read, or mapped read-only."""
    no_follow = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:  # no symlink swapped in since the lstat above: the descriptor is what gets checked and used
        with open(path, "rb", opener=lambda p, flags: os.open(p, no_follow)) as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise BundleError(f"{path}: a symlink or not a regular file; bundles hold plain files only")
            if info.st_size != size:
                raise _size_error(path, info.st_size, size)
            if in_memory or size == 0:  # mmap refuses an empty file
                data: FileBytes = handle.read(size + 1)
                if len(data) != size:
                    raise _size_error(path, len(data), size)
                return data
            try:
                return mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
            except ValueError:  # cut short since the fstat above
                raise _size_error(path, os.fstat(handle.fileno()).st_size, size) from None
    except OSError as err:  # a symlink swapped in (ELOOP), or unreadable
        raise BundleError(f"{path}: cannot be read ({err.strerror}); copy the bundle again") from None


def _sha256(data: FileBytes) -> str:
    digest = hashlib.sha256()
    with memoryview(data) as view:
        for start in range(0, len(view), CHUNK_BYTES):
            digest.update(view[start : start + CHUNK_BYTES])
            drop_pages(data, start, start + CHUNK_BYTES)
    return digest.hexdigest()


def drop_pages(data: FileBytes, start: int, stop: int) -> None:
    """Drop the pages of ``data[start:stop]`` from resident memory when ``data`` is a read-only map.

    Safe on a read-only file map: a later access reads the page again from the file (page cache).
    Does nothing for ``bytes`` or where the platform has no ``madvise``.
    """
    if not isinstance(data, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first, stop = start - start % mmap.PAGESIZE, min(stop, len(data))
    if stop > first:
        data.madvise(mmap.MADV_DONTNEED, first, stop - first)


def _names(blobs: dict[str, FileBytes], name: str, root: Path, count: int) -> PackedNames:
    """The lines of a names file, checked in one pass of chunks: UTF-8, ``count`` of them, non-empty, unique.

    Names sorted by UTF-8 bytes (``kgedge.data`` sorts its vocabularies) are unique by that very
    order; other files (older bundles, other exporters) are checked with a set.
    """
    data, where = blobs[name], root / name
    ends, ordered, previous = [], True, None
    start = 0
    while start < len(data):
        stop = min(start + _NAME_CHUNK_BYTES, len(data))
        if stop < len(data):  # end the chunk after a newline, so that no line or character is cut
            cut = data.rfind(b"\n", start, stop)
            cut = data.find(b"\n", stop) if cut < 0 else cut
            stop = len(data) if cut < 0 else cut + 1
        chunk = data[start:stop]
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{where}: not UTF-8; {_REEXPORT}") from None
        ends.append(start + 1 + np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == ord("\n")))
        if ordered:
            lines = chunk.split(b"\n")
            if chunk.endswith(b"\n"):
                lines.pop()
            ordered = (previous is None or previous < lines[0]) and all(a < b for a, b in zip(lines, lines[1:]))
            previous = lines[-1]
        drop_pages(data, start, stop)
        start = stop
    if len(data) and data[len(data) - 1 :] != b"\n":  # a last line without its newline
        ends.append(np.array([len(data) + 1]))
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), *ends]).astype(np.int64, copy=False)
    names = PackedNames(data, offsets, ordered)
    if len(names) != count:
        raise BundleError(f"{where}: {len(names)} lines, the manifest says {count}; {_REEXPORT}")
    if np.any(np.diff(offsets) <= 1) or (not ordered and len(set(names)) != count):
        raise BundleError(f"{where}: names must be non-empty and unique; {_REEXPORT}")
    return names


def _npy(data: FileBytes, where: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, shape, data offset)`` from the header of an ``.npy`` file, without reading its data."""
    if data[:4] == b"PK\x03\x04":  # what np.load would open as an .npz archive
        raise BundleError(f"{where}: an .npz archive, not a .npy array; {_REEXPORT}")
    try:
        header = io.BytesIO(data[:_NPY_HEADER_MAX])
        version = np.lib.format.read_magic(header)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version} is not 1.0 or 2.0")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(header)  # Fortran order changes nothing for the 1-D arrays accepted
        if dtype.hasobject:
            raise ValueError("it holds Python objects (pickles)")
        expected = header.tell() + math.prod(shape) * dtype.itemsize
        if expected != len(data):
            raise ValueError(f"{len(data):,} bytes where its header implies {expected:,}")
    except (ValueError, OSError, EOFError) as err:
        raise BundleError(f"{where}: not a readable .npy without pickles ({err}); {_REEXPORT}") from None
    return dtype, shape, header.tell()


def _array(blobs: dict[str, FileBytes], name: str, root: Path, shape: tuple[int, ...] | None, low: int,
           high: int | None, order: tuple[Literal["strictly", "weakly"], str] | None = None) -> np.ndarray:
    """A 1-D integer array, its values in ``[low, high)``, checked chunk by chunk.

    uint8, uint16, int32 and int64 arrays (native byte order: what the exporter writes) are used as
    they are (from a mapped file: a read-only view of the map); other integer dtypes become an int64 copy.

    Args:
        order: ``("strictly" | "weakly", what to say)``: the values must also increase (strictly or
            not); the message of the error names the file and says what.
    """
    data, where = blobs[name], root / name
    if isinstance(data, bytes):
        array: np.ndarray | None = _loaded(data, where)
        dtype, found, offset = array.dtype, array.shape, 0
    else:  # only the header is parsed here: the data stays in the map
        array, (dtype, found, offset) = None, _npy(data, where)
    if dtype.kind not in "iu" or len(found) != 1 or (shape is not None and found != shape):
        raise BundleError(f"{where}: {dtype} array of shape {found}; expected 1-D integers"
                          f"{f' of shape {shape}' if shape else ''}; {_REEXPORT}")
    if array is None:
        array = np.frombuffer(data, dtype=dtype, count=found[0], offset=offset)
    last = None  # the previous chunk's last value, for the order across chunks
    for part in _chunks(array, data, offset):
        if part.min() < low or (high is not None and part.max() >= high):
            raise BundleError(f"{where}: values outside [{low}, {high}); {_REEXPORT}")
        if order is not None:  # comparisons, not np.diff: a difference of unsigned values wraps around
            above = operator.gt if order[0] == "strictly" else operator.ge
            if not (above(part[1:], part[:-1]).all() and (last is None or above(part[0], last))):
                raise BundleError(f"{where}: {order[1]}; {_REEXPORT}")
            last = part[-1]
    return array if array.dtype in _KEPT_DTYPES else array.astype(np.int64)


def _loaded(data: bytes, where: Path) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise BundleError(f"{where}: not a readable .npy without pickles ({err}); {_REEXPORT}") from None
    if not isinstance(array, np.ndarray):  # np.load opens an .npz archive as a lazy NpzFile
        raise BundleError(f"{where}: an .npz archive, not a .npy array; {_REEXPORT}")
    return array


def _chunks(array: np.ndarray, data: FileBytes, offset: int) -> Iterator[np.ndarray]:
    """``array`` in non-empty slices of about :data:`CHUNK_BYTES`; once the caller is done with one, its
    pages are dropped from resident memory (``array`` starts at byte ``offset`` of ``data``)."""
    step = max(1, CHUNK_BYTES // array.itemsize)
    for start in range(0, len(array), step):
        yield array[start : start + step]
        drop_pages(data, offset + start * array.itemsize, offset + (start + step) * array.itemsize)
