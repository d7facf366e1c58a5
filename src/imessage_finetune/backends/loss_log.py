"""The training loss by step (`training-log.json`), kept by every backend's training for the
evaluation report's loss plot.

Every backend reports steps (step, loss, and whatever else it measures, such as a service's
validation loss); the log keeps the last value reported for each step, so a run resumed from
a checkpoint, which repeats the steps after it, logs each step once. A run in progress keeps
its log in a partial file tagged with the run, which a resumed run continues.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.schema_check import validate_document

FORMAT = "imessage-finetune/training-log"
VERSION = 1


class LossLog:
    """The steps of one training run."""

    def __init__(self, backend: str, run: str = "", partial: Path | None = None) -> None:
        self.backend, self.run, self.partial = backend, run, partial
        self.steps: dict[int, dict[str, Any]] = {}
        if partial is not None and partial.is_file():
            saved = load_json(partial.read_bytes())
            if saved.get("run") == run and saved.get("backend") == backend:
                self.steps = {s["step"]: s for s in saved["steps"]}

    def add(self, step: int, loss: float | None, **metrics: Any) -> None:
        """Record a step's training loss (and other metrics, None ones left out)."""
        entry: dict[str, Any] = {"step": step, "loss": loss}
        entry.update({k: v for k, v in metrics.items() if v is not None})
        self.steps[step] = entry
        if self.partial is not None:
            with atomic_write(self.partial) as handle:
                handle.write(dump_json({"run": self.run, "backend": self.backend, "steps": self.ordered()}))

    def ordered(self) -> list[dict[str, Any]]:
        """The steps in order."""
        return [self.steps[k] for k in sorted(self.steps)]

    def document(self, **summary: Any) -> dict[str, Any]:
        """The training-log.json document (`summary`: the run's figures, such as the loss
        before and after training on a sample, or the service's final metrics)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "backend": self.backend,
            "steps": self.ordered(),
            "summary": summary,
        }

    def discard_partial(self) -> None:
        """Remove the partial file once the log is published."""
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)


def publish_log(out_dir: Path, document: dict[str, Any]) -> None:
    """Write training-log.json (validated, atomically)."""
    validate_document(artifacts.TRAINING_LOG, document)
    with atomic_write(artifacts.TRAINING_LOG.path(out_dir)) as handle:
        handle.write(dump_json(document))
