"""Atomic publication of artifacts: write a temporary file beside the target, sync, rename.

A stage that fails or is killed leaves the previous good artifact or none, never a partial
one. Temporary files and folders are named `.<target>.tmp-<random>` so that
`clean_stale_temporaries` can remove what a killed run left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

TEMP_MARKER = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    # Windows cannot open a folder as a file (and NTFS journals the rename itself).
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Publication:
    """A file being written to `temp`; `changed` tells, after the block, if `target` changed."""

    temp: Path
    target: Path
    changed: bool = False


def _same_bytes(a: Path, b: Path) -> bool:
    if not b.is_file() or a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as left, open(b, "rb") as right:
        while True:
            chunk = left.read(1 << 20)
            if chunk != right.read(1 << 20):
                return False
            if not chunk:
                return True


@contextmanager
def atomic_path(target: Path) -> Iterator[Publication]:
    """Yield a temporary file beside `target`; on success it is synced and renamed onto it.

    Use `.temp` for writers that need a path (SQLite). The file is private (0600). When the
    new bytes equal the existing target's, the target is left untouched (same mtime), so
    downstream stages see no change. On any exception, including KeyboardInterrupt, the
    temporary file is removed and the previous target stays as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARKER}", dir=target.parent)
    os.close(fd)
    publication = Publication(Path(name), target)
    try:
        yield publication
        if _same_bytes(publication.temp, target):
            publication.temp.unlink()
            return
        with open(publication.temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(publication.temp, target)
        _fsync_dir(target.parent)
        publication.changed = True
    except BaseException:
        publication.temp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary file whose contents replace `target` atomically when the block succeeds."""
    with atomic_path(target) as publication, open(publication.temp, "wb") as handle:
        yield handle
        handle.flush()


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a private temporary folder beside `target` that replaces it whole on success.

    For outputs that are folders (a model, an adapter, a checkpoint). The old folder is
    removed only once the new one is complete; on any exception the new one is discarded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMP_MARKER}", dir=target.parent))
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMP_MARKER}", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Remove temporary files and folders a killed run left below `folder`; return them."""
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    for path in sorted(folder.rglob(f".*{TEMP_MARKER}*")):
        if any(parent in removed for parent in path.parents):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
