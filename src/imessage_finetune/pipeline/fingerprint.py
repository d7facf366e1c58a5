"""What makes a stage stale, as doit `uptodate` checks with their saved values.

doit alone checks targets for existence only and keeps one `config_changed` per task; these
checks make each stage depend on its own parameters, its code and the package version
(`StageFingerprint`), on the integrity of what it published (`FilesUnchanged` over its
targets), and, for the snapshot, on the content of a live database that can change without
its main file changing (`FilesUnchanged` over chat.db and chat.db-wal). Each stores the full
value, not a digest, so a run can say what changed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from doit.dependency import MD5Checker

from imessage_finetune import __version__
from imessage_finetune.digests import file_digest, package_versions

PACKAGE_DIR = Path(__file__).resolve().parent.parent
KEY_DEPENDENCIES = ("doit", "jsonschema", "jsonschema-rs", "orjson", "langchain-core")


# `from .x import y`, `from ..x import y`, and `from imessage_finetune.x import y`.
_PACKAGE_IMPORT = re.compile(r"^\s*from\s+(\.+|imessage_finetune\.?)([\w.]*)\s+import\s+(\([^)]*\)|[^\n]+)", re.M)


@functools.cache
def _imported(name: str) -> tuple[str, ...]:
    """Package files one module imports (paths relative to the package)."""
    path = PACKAGE_DIR / name
    found = []
    for dots, module, names in _PACKAGE_IMPORT.findall(path.read_text(encoding="utf-8")):
        if dots.startswith("imessage_finetune"):
            base = PACKAGE_DIR
        else:
            base = path.parent
            for _ in range(len(dots) - 1):
                base = base.parent
        if module:
            base = base.joinpath(*module.split("."))
        candidates = [base.with_suffix(".py"), base / "__init__.py"]
        candidates += [
            base / f"{n.split()[0]}.py" for n in names.strip("()").replace("\n", " ").split(",") if n.strip()
        ]
        found += [str(c.relative_to(PACKAGE_DIR)) for c in candidates if c.is_file()]
    return tuple(found)


def module_file(where: Callable[..., object] | str) -> str:
    """The file of a function's module, or of a module named `imessage_finetune.x.y` (found
    without importing it): relative to the package for its own modules, absolute otherwise
    (a stage defined outside the package)."""
    if isinstance(where, str):
        spec = importlib.util.find_spec(where)
        assert spec is not None and spec.origin is not None, f"no module {where}"
        path = Path(spec.origin).resolve()
    else:
        path = Path(inspect.getfile(where)).resolve()
    return str(path.relative_to(PACKAGE_DIR)) if path.is_relative_to(PACKAGE_DIR) else str(path)


def module_closure(entry: str | Iterable[str]) -> set[str]:
    """The package files modules run: themselves and every package module they import,
    transitively (found by a scan of their import lines: no code is imported or run)."""
    seen: set[str] = set()
    pending = [entry] if isinstance(entry, str) else list(entry)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += _imported(name)
    return seen


def code_hash(modules: Iterable[str]) -> str:
    """sha256 of package files (paths relative to the package)."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + (PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    return (("imessage-finetune", __version__), *package_versions(KEY_DEPENDENCIES).items())


def dependency_versions() -> dict[str, str]:
    """Versions of the package and the libraries that shape its outputs (read once)."""
    return dict(_versions())


class DigestChecker(MD5Checker):
    """doit's check of a task's file_dep with the sha256 of `digests.file_digest` instead of
    its own md5 (a build hashes each version of a file once).

    As doit's default: a file whose modification time is unchanged is unchanged, one whose
    size differs has changed, and otherwise the digests decide.
    """

    def check_modified(self, file_path: str, file_stat: os.stat_result, state: Any) -> bool:
        """Whether the file differs from its saved (mtime, size, digest) state."""
        timestamp, size, digest = state
        if file_stat.st_mtime == timestamp:
            return False
        return bool(file_stat.st_size != size or digest != file_digest(Path(file_path)))

    def get_state(self, dep: str, current_state: Any) -> Any:
        """The (mtime, size, digest) to save; None when the saved one has the same mtime."""
        timestamp = os.path.getmtime(dep)
        if current_state and current_state[0] == timestamp:
            return None
        return timestamp, os.path.getsize(dep), file_digest(Path(dep))


def files_state(paths: Iterable[Path]) -> dict[str, list[Any] | None]:
    """Per file: size, modification time (ns) and sha256; None for a file that is absent, and
    no hash for one that cannot be read (no Full Disk Access, a folder): the stage's own check
    then says what is wrong, in one line."""
    state: dict[str, list[Any] | None] = {}
    for path in paths:
        try:
            info = path.stat()
        except FileNotFoundError:
            state[str(path)] = None
            continue
        except OSError:
            state[str(path)] = [None, None, None]
            continue
        try:
            digest: str | None = file_digest(path)
        except OSError:
            digest = None
        state[str(path)] = [info.st_size, info.st_mtime_ns, digest]
    return state


def changed_files(saved: dict[str, list[Any] | None], paths: Iterable[Path]) -> list[Path]:
    """The files whose bytes differ from the saved state; a matching size and mtime skip hashing.
    A file that cannot be read counts as changed (its stage will say why it cannot read it)."""
    changed = []
    for path in paths:
        before = saved.get(str(path))
        try:
            info = path.stat()
        except FileNotFoundError:
            if before is not None:
                changed.append(path)
            continue
        except OSError:
            changed.append(path)
            continue
        if before is None or before[2] is None:
            changed.append(path)
        elif [info.st_size, info.st_mtime_ns] != before[:2]:
            try:
                if info.st_size != before[0] or file_digest(path) != before[2]:
                    changed.append(path)
            except OSError:
                changed.append(path)
    return changed


def missing_files(paths: Iterable[Path]) -> list[Path]:
    """The files that are not there."""
    return [path for path in paths if not path.exists()]


class StageFingerprint:
    """Stale when the stage's parameters, code or dependency versions differ from the last run."""

    def __init__(self, stage: str, params: dict[str, Any], entry: str | Iterable[str]) -> None:
        self.key = f"fingerprint:{stage}"
        self.current: dict[str, Any] = {
            "params": params,
            "code": code_hash(module_closure(entry)),
            "versions": dependency_versions(),
        }

    def configure_task(self, task: Any) -> None:
        """Save the fingerprint when the task succeeds (doit calls this once per task)."""
        task.value_savers.append(lambda: {self.key: self.current})

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        """Up to date when the saved fingerprint is the current one."""
        return values.get(self.key) == self.current

    def explain(self, values: dict[str, Any]) -> list[str]:
        """What differs from the saved fingerprint, e.g. `ai_sender: 'me' -> 'Tortoise'`."""
        saved = values.get(self.key)
        if saved is None:
            return ["never built"]
        lines = []
        for key in sorted(set(saved["params"]) | set(self.current["params"])):
            old, new = saved["params"].get(key), self.current["params"].get(key)
            if old != new:
                lines.append(f"{key}: {old!r} -> {new!r}")
        if saved["code"] != self.current["code"]:
            lines.append("its code changed")
        for name, new in self.current["versions"].items():
            old = saved["versions"].get(name)
            if old != new:
                lines.append(f"{name} {old} -> {new}")
        return lines


class FilesUnchanged:
    """Stale when files' bytes differ from the saved state (a stat match skips the hashing).

    With `save_after=True` the state is recorded after the task ran (for a stage's own
    targets); otherwise the task's action must return it under `key` (for inputs that may
    change while the task runs, so the state recorded is the one the task read).
    """

    def __init__(self, key: str, paths: Iterable[Path], *, save_after: bool) -> None:
        self.key = key
        self.paths = list(paths)
        self.save_after = save_after

    def configure_task(self, task: Any) -> None:
        """Record the files' state after a successful run, when this check owns it."""
        if self.save_after:
            task.value_savers.append(lambda: {self.key: files_state(self.paths)})

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        """Up to date when the same files were recorded and none changed."""
        saved = values.get(self.key)
        return saved is not None and set(saved) == {str(p) for p in self.paths} and not changed_files(saved, self.paths)

    def explain(self, values: dict[str, Any]) -> list[str]:
        """Which files changed, in words (a missing target is doit's to say: "X is missing")."""
        saved = values.get(self.key)
        if not saved or set(saved) != {str(p) for p in self.paths}:
            return [] if self.key == "targets" else [f"{self.key} not recorded yet"]
        missing = set(missing_files(self.paths))
        if self.key == "targets":
            return [
                f"{p.name} was edited or damaged since it was built"
                for p in changed_files(saved, self.paths)
                if p not in missing
            ]
        return [f"{p.name} {'is missing' if p in missing else 'changed'}" for p in changed_files(saved, self.paths)]


class Forced:
    """Stale on request (`run STAGE --force`): nothing recorded is forgotten, and the stage
    says it runs because it was forced."""

    def __init__(self, forced: bool) -> None:
        self.forced = forced

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        """Never up to date when forced."""
        return not self.forced

    def explain(self, values: dict[str, Any]) -> list[str]:
        """Why: it was asked for."""
        return ["forced"]
