"""doit's state file, made crash-safe.

doit's JSON backend writes its state once, at the end of a run, and not atomically
(pydoit/doit#182): a SIGKILL loses every success of that run and can leave a truncated
file. `SyncedJsonDB` writes the state after every change, to a temporary file that is
renamed into place, so a killed run keeps the stages it finished and the next run redoes
only the rest; it writes nothing when nothing changed.

The pipeline asks doit for its built-in `json` backend, which it finds however it is run
(`doit -f path/to/dodo.py` from another folder reads no pyproject.toml, so a backend
registered there as a plugin would be unknown), and the pipeline's task creators turn the
instance doit opened into a `SyncedJsonDB` (`make_crash_safe`) before any task runs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from doit.dependency import JsonDB

BACKEND_NAME = "json"


class SyncedJsonDB(JsonDB):
    """doit's JSON backend, saved atomically after every change (and only after a change)."""

    desc = "JSON file written atomically after every change (imessage-finetune)"

    def _save(self) -> None:
        folder = Path(self.name).parent
        fd, temp = tempfile.mkstemp(prefix=f".{Path(self.name).name}.tmp-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.codec.encode(self._db))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def dump(self) -> None:
        """Save the whole state (doit calls this at the end of a run); every change is saved
        already, so there is nothing left to write unless doit changed the state directly."""
        if getattr(self, "_unsaved", True) and (self._db or Path(self.name).exists()):
            self._save()
            self._unsaved = False

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        """Store a value and save at once."""
        super().set(task_id, dependency, value)
        self._save()
        self._unsaved = False

    def remove(self, task_id: str) -> None:
        """Forget a task (doit does this when it fails) and save at once, if it was known."""
        if task_id in self._db:
            super().remove(task_id)
            self._save()
            self._unsaved = False

    def remove_all(self) -> None:
        """Forget every task and save at once."""
        super().remove_all()
        self._save()
        self._unsaved = False


def make_crash_safe(dep_manager: Any) -> None:
    """Turn the JSON backend doit opened into a `SyncedJsonDB` (same state, same file; only
    how it saves changes). Other backends a user chose with `--backend` are left as they are."""
    backend: Any = getattr(dep_manager, "backend", None)
    if type(backend) is JsonDB:
        backend.__class__ = SyncedJsonDB
        backend._unsaved = False
        # doit's Dependency keeps the backend's bound methods (doit 0.37): bind them again.
        dep_manager._set = backend.set
        dep_manager.remove = backend.remove
        dep_manager.remove_all = backend.remove_all


def reload_state(dep_manager: Any) -> None:
    """Read the JSON state again from its file. doit reads it before the run takes the
    folder's lock; a build that waited for another one must see what that one recorded, or
    it would rebuild the stages the other build just finished."""
    backend: Any = getattr(dep_manager, "backend", None)
    if isinstance(backend, JsonDB):
        backend._db = backend._load() if os.path.exists(backend.name) else {}
