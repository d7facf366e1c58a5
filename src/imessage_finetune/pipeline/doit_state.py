"""doit's state file, made crash-safe.

doit's JSON backend writes its state once, at the end of a run, and not atomically
(pydoit/doit#182): a SIGKILL loses every success of that run and can leave a truncated
file. This backend writes the state after every change, to a temporary file that is renamed
into place, so a killed run keeps the stages it finished and the next run redoes only the
rest.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from doit.dependency import JsonDB

BACKEND_NAME = "json-synced"


class SyncedJsonDB(JsonDB):  # type: ignore[misc]
    """doit's JSON backend, saved atomically after every change."""

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
        """Save the whole state (doit calls this at the end of a run)."""
        self._save()

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        """Store a value and save at once."""
        super().set(task_id, dependency, value)
        self._save()

    def remove(self, task_id: str) -> None:
        """Forget a task (doit does this when it fails) and save at once."""
        super().remove(task_id)
        self._save()


DOIT_PLUGINS = {"BACKEND": {BACKEND_NAME: f"{__name__}:SyncedJsonDB"}}
