"""Reading a bundle: manifest checks, size + sha256 of every file, then the vocabularies and indexes.

Nothing here trusts the files: every name in the manifest must be a plain file name inside the
bundle directory (no ``/``, no ``..``, no symlink), and every file is read once, checked against its
size and sha256, and only then parsed, so that what was verified is exactly what is used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from kgedge.data.index import KnownTails
from kgedge.runtime.archive import extracted, is_archive
from kgedge.runtime.errors import BundleError
from kgedge.runtime.vocab import INVERSE_SUFFIX

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
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REEXPORT = "re-export the bundle with `kgedge export`"


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified bundle, fully in memory (an archive's temporary folder is already gone).

    Attributes:
        source: the directory or archive it was read from.
        manifest: the parsed ``manifest.json``.
        model: the bytes of ``model.onnx``.
        entities: entity names by id, ``N`` of them.
        relations: data relation names by id, ``R`` of them (inverses are ids ``R..2R-1``).
        types: entity type names by type id.
        entity_types: shape ``(N,)`` int64 type id of each entity.
        known: train triples in both directions, keys ``head * 2R + relation``.
        overlay_path: where on-device seen items are persisted.
        overlays: ``(label, text)`` of existing overlay files to apply, in order.
    """

    source: Path
    manifest: dict[str, Any]
    model: bytes
    entities: tuple[str, ...]
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
    entities = _lines(blobs, "entities.txt", root, n)
    relations = _lines(blobs, "relations.txt", root, r)
    clash = sorted(set(relations) & {f"{x}{INVERSE_SUFFIX}" for x in relations})
    if clash:
        raise BundleError(f"{root / 'relations.txt'}: {clash} would clash with the inverse names NAME^-1; "
                          "rename those relations in the data and re-train")
    types = tuple(manifest["types"])
    entity_types = _array(blobs, "entity_types.npy", root, (n,), 0, len(types))
    keys = _array(blobs, "known_keys.npy", root, None, 0, n * 2 * r)
    offsets = _array(blobs, "known_offsets.npy", root, (len(keys) + 1,), 0, None)
    tails = _array(blobs, "known_tails.npy", root, None, 0, n)
    if np.any(np.diff(keys) <= 0):
        raise BundleError(f"{root / 'known_keys.npy'}: keys are not strictly increasing; {_REEXPORT}")
    if offsets[0] != 0 or offsets[-1] != len(tails) or np.any(np.diff(offsets) < 0):
        raise BundleError(f"{root / 'known_offsets.npy'}: offsets do not index known_tails.npy; {_REEXPORT}")
    known = object.__new__(KnownTails)  # the exporter saved exactly KnownTails' arrays: no rebuild
    known.keys, known.offsets, known.tails, known.num_relations = keys, offsets, tails, 2 * r
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


def verify_files(root: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Read every file of ``manifest["files"]`` and check its size (bytes) and sha256.

    Returns:
        file name -> content, exactly the verified bytes.

    Raises:
        BundleError: a file is missing, a symlink, outside ``root``, or of another size or checksum.
    """
    real_root = os.path.realpath(root)
    blobs: dict[str, bytes] = {}
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
        data = path.read_bytes() if info.st_size == entry["bytes"] else b""
        if info.st_size != entry["bytes"] or len(data) != entry["bytes"]:
            raise BundleError(f"{path}: {info.st_size:,} bytes, the manifest says {entry['bytes']:,}; "
                              "the file is truncated or changed: copy the bundle again")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BundleError(f"{path}: sha256 differs from the manifest; the file is corrupted or was "
                              "modified: copy the bundle again")
        blobs[name] = data
    return blobs


def _lines(blobs: dict[str, bytes], name: str, root: Path, count: int) -> tuple[str, ...]:
    try:
        text = blobs[name].decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{root / name}: not UTF-8; {_REEXPORT}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != count:
        raise BundleError(f"{root / name}: {len(lines)} lines, the manifest says {count}; {_REEXPORT}")
    if not all(lines) or len(set(lines)) != len(lines):
        raise BundleError(f"{root / name}: names must be non-empty and unique; {_REEXPORT}")
    return tuple(lines)


def _array(blobs: dict[str, bytes], name: str, root: Path, shape: tuple[int, ...] | None,
           low: int, high: int | None) -> np.ndarray:
    """A 1-D integer array as int64, its values in ``[low, high)``."""
    try:
        array = np.load(io.BytesIO(blobs[name]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise BundleError(f"{root / name}: not a readable .npy without pickles ({err}); {_REEXPORT}") from None
    if not isinstance(array, np.ndarray):  # np.load opens an .npz archive as a lazy NpzFile
        raise BundleError(f"{root / name}: an .npz archive, not a .npy array; {_REEXPORT}")
    if array.dtype.kind not in "iu" or array.ndim != 1 or (shape is not None and array.shape != shape):
        raise BundleError(f"{root / name}: {array.dtype} array of shape {array.shape}; expected 1-D integers"
                          f"{f' of shape {shape}' if shape else ''}; {_REEXPORT}")
    array = array.astype(np.int64)
    if len(array) and (array.min() < low or (high is not None and array.max() >= high)):
        raise BundleError(f"{root / name}: values outside [{low}, {high}); {_REEXPORT}")
    return array
