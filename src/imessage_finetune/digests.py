"""Content hashes of files and the installed versions of libraries: what "the same inputs"
means for fingerprints, receipts and model.json."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Digests computed in this process, by file identity: a build hashes each version of a file
# once, where the snapshot stage, the lock file, doit's file_dep check and the targets' check
# each hashed chat.db again (five times 290 MB for a heavy user).
_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (remembered while its size, times and inode stay the same)."""
    info = os.stat(path)
    key = (os.fspath(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
    known = _DIGESTS.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    _DIGESTS[key] = known = digest.hexdigest()
    return known


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of `names` from their metadata ("absent" if not installed): nothing
    is imported."""
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions
