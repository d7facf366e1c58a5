"""Provenance: `artifacts/pipeline.lock.json` records the last good build of each stage.

For each stage: the sha256 of its inputs and outputs, its parameters, the hash of its code,
the versions of the package and its key dependencies, and how long it took. `verify`
re-hashes the outputs against it. Timings are the only clock-dependent values and live only
here, never in the artifacts themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune.atomic import atomic_write
from imessage_finetune.digests import file_digest
from imessage_finetune.jsonio import dump_json, load_json

LOCK_FILE = "pipeline.lock.json"
FORMAT = "imessage-finetune/lock"


def lock_path(artifacts_dir: Path) -> Path:
    """Where the lock file lives."""
    return artifacts_dir / LOCK_FILE


def _digests(paths: list[Path], root: Path) -> dict[str, str | None]:
    """sha256 per file, keyed by its path in the artifacts folder (absolute when outside)."""
    return {
        str(p.relative_to(root) if p.is_relative_to(root) else p): file_digest(p) if p.is_file() else None
        for p in paths
    }


def read_lock(path: Path) -> dict[str, Any]:
    """The lock file's stages, or an empty record when there is none yet."""
    if not path.is_file():
        return {"format": FORMAT, "stages": {}}
    return load_json(path.read_bytes())


def record_stage(
    path: Path,
    stage: str,
    *,
    root: Path,
    inputs: list[Path],
    outputs: list[Path],
    fingerprint: dict[str, Any],
    seconds: float,
) -> None:
    """Record a stage's successful build (the file is rewritten atomically)."""
    lock = read_lock(path)
    lock["stages"][stage] = {
        "inputs": _digests(inputs, root),
        "outputs": _digests(outputs, root),
        "params": fingerprint["params"],
        "code": fingerprint["code"],
        "versions": fingerprint["versions"],
        "seconds": round(seconds, 2),
    }
    lock["stages"] = dict(sorted(lock["stages"].items()))
    with atomic_write(path) as handle:
        handle.write(dump_json(lock))


@dataclass(frozen=True)
class Mismatch:
    """An artifact whose bytes are not those the lock file recorded."""

    stage: str
    artifact: str
    problem: str


def verify(artifacts_dir: Path) -> tuple[int, list[Mismatch]]:
    """Re-hash every recorded output; return how many were checked and what does not match."""
    lock = read_lock(lock_path(artifacts_dir))
    checked, mismatches = 0, []
    for stage, entry in lock["stages"].items():
        for name, expected in entry["outputs"].items():
            checked += 1
            path = artifacts_dir / name
            if not path.is_file():
                mismatches.append(Mismatch(stage, name, "missing"))
            elif file_digest(path) != expected:
                mismatches.append(Mismatch(stage, name, "changed since it was built"))
    return checked, mismatches
