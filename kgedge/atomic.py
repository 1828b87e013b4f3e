"""Atomic writes: outputs go to a temporary sibling first and are renamed when complete.

Shared by every stage that writes (data, checkpoints, bundles), so that an interrupted process never
leaves a half-written file where a good one is expected. Standard library only.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


#: a temporary sibling untouched for this long was left by a killed process (a write takes seconds
#: to minutes), so the next write of the same target removes it
STALE_AFTER_S = 6 * 3600


def _sibling(target: Path) -> Path:
    """An unused hidden name beside ``target``: ``.NAME.<random>.tmp``; stale ones are swept first."""
    _sweep_stale(target)
    return target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")


def _sweep_stale(target: Path) -> None:
    """Remove ``.NAME.<16 hex>.tmp`` siblings of ``target`` not modified for :data:`STALE_AFTER_S`."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{16}}\.tmp")
    cutoff = time.time() - STALE_AFTER_S
    try:
        candidates = [p for p in target.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return
    for path in candidates:
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    On an exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target)
    # not mkstemp: its 0o600 would survive the rename; 0o666 minus the umask is what open() gives
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not Linux, or a C library without renameat2
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target``.

    Raises:
        FileExistsError: ``target`` exists, is not empty, and ``overwrite`` is False.
    """
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} exists and is not empty; choose another --out or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target)
    tmp.mkdir()  # not mkdtemp: its 0o700 would survive the rename; mkdir gives 0o777 minus the umask
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
        elif not _exchange(tmp, target):  # swapped in one step: ``tmp`` holds the old one, removed below
            # two renames: a process killed between them leaves ``target`` missing (the old one at ``old``)
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
