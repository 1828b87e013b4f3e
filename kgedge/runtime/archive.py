"""Safe extraction of a bundle packed as ``.tar`` / ``.tar.gz``: no absolute paths, no ``..``, no links."""

from __future__ import annotations

import logging
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from kgedge.runtime.errors import BundleError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# A bundle of a 5M-entity int8 model is a few GB; anything much larger is not a bundle (or a bomb).
MAX_ARCHIVE_BYTES = 16 * 1024**3


def is_archive(path: Path) -> bool:
    """True when ``path`` is a regular file named like a tar archive."""
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _checked_members(tar: tarfile.TarFile, archive: Path, max_bytes: int) -> list[tarfile.TarInfo]:
    members, total = [], 0
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or PurePosixPath(member.name).is_absolute() or ".." in parts:
            raise BundleError(f"{archive}: member {member.name!r} points outside the archive; refusing to extract")
        if member.issym() or member.islnk():
            raise BundleError(f"{archive}: member {member.name!r} is a link; bundles hold plain files only")
        if not (member.isfile() or member.isdir()):
            raise BundleError(f"{archive}: member {member.name!r} is not a plain file or folder; refusing to extract")
        total += member.size
        if total > max_bytes:
            raise BundleError(f"{archive}: more than {max_bytes:,} bytes uncompressed; this is not a kgedge bundle")
        members.append(member)
    return members


def _bundle_root(folder: Path, archive: Path) -> Path:
    if (folder / "manifest.json").is_file():
        return folder
    entries = list(folder.iterdir())
    if len(entries) == 1 and (entries[0] / "manifest.json").is_file():
        return entries[0]
    raise BundleError(
        f"{archive}: no manifest.json at the top of the archive or in its single top folder; "
        "pack the bundle directory made by `kgedge export` (tar -czf bundle.tar.gz BUNDLE_DIR)"
    )


@contextmanager
def extracted(archive: Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> Iterator[Path]:
    """Extract ``archive`` into a temporary folder and yield the bundle directory inside it.

    The folder is deleted when the context ends.

    Raises:
        BundleError: unreadable archive, a member with an absolute path, ``..``, a link or a device,
            more than ``max_bytes`` (bytes) uncompressed, or no ``manifest.json``.
    """
    with tempfile.TemporaryDirectory(prefix="kgedge-bundle-") as tmp:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _checked_members(tar, archive, max_bytes)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise BundleError(f"{archive}: cannot extract ({err}); is it a complete .tar/.tar.gz?") from None
        log.info("extracted %s to %s", archive, tmp)
        yield _bundle_root(Path(tmp), archive)
