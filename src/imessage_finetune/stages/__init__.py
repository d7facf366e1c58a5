"""The stages of the pipeline, in order: one module each, named after what it writes, each
declaring its `STAGE` (see `stage.py`). Adding a stage is one module and one line here."""

from __future__ import annotations

from imessage_finetune.stages import dataset, demo, evaluation, merged, model, sessions, snapshot, upload
from imessage_finetune.stages.stage import Stage

STAGES: list[Stage] = [
    demo.STAGE,
    snapshot.STAGE,
    sessions.STAGE,
    merged.STAGE,
    dataset.STAGE,
    upload.STAGE,
    model.STAGE,
    evaluation.STAGE,
]
"""Every stage, in the order they run; a configuration uses those that apply to it."""


def stage_named(name: str) -> Stage:
    """The registered stage called `name` (KeyError if none is)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)
