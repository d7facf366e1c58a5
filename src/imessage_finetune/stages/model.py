"""Stage `train`: the fine-tuned model, described in `artifacts/model.json`.

The backend `backend_for` chooses does the training (`Backend.train`) and says what it reads,
writes and depends on (`Backend.training`): with the local backend a LoRA adapter trained
here from train.jsonl; with the openai backend a job at the service for the uploaded files.
This stage turns the backend's reports into lines or a progress bar.
"""

from __future__ import annotations

from typing import Any

from imessage_finetune.artifacts import Artifact
from imessage_finetune.backends import backend_for, backend_module
from imessage_finetune.backends.interface import TrainingCallbacks, TrainingStep
from imessage_finetune.config import Config, ConfigView
from imessage_finetune.stages.stage import Stage, StageContext


def keys(config: Config) -> tuple[str, ...]:
    """The configured backend's training keys."""
    return backend_for(config).training().keys


def side_keys(config: Config) -> tuple[str, ...]:
    """What the configured backend reads while training without its model depending on it."""
    return backend_for(config).training().side_keys


def inputs(config: ConfigView) -> tuple[Artifact, ...]:
    """What the backend trains on (never the whole dataset report: its OpenAI cost estimate
    must not retrain a local model)."""
    return backend_for(config).training().reads


def outputs(config: ConfigView) -> tuple[Artifact, ...]:
    """model.json and what it describes."""
    return backend_for(config).training().writes


def params(config: ConfigView) -> dict[str, Any]:
    """Library versions, the endpoint...: what else the backend's model depends on."""
    return dict(backend_for(config).training().params)


def watched(config: ConfigView) -> list[Any]:
    """A base model given as a folder."""
    return list(backend_for(config).training().watched)


def code(config: ConfigView) -> list[str]:
    """The configured backend's module: its code (and what it imports) trains the model."""
    return [backend_module(config)]


def run(ctx: StageContext) -> None:
    """Train with the configured backend, showing its progress."""
    backend = backend_for(ctx.config, options=ctx.options)
    every = 1  # steps between two lines of progress, when no bar is drawn
    with ctx.progress() as bar:

        def started(device: str, examples: int, steps: int) -> None:
            nonlocal every
            every = 1 if ctx.options.verbosity > 1 else max(1, steps // 10)

        def step(event: TrainingStep) -> None:
            if bar is not None and event.total_steps:
                bar(event.step, event.total_steps)
            elif event.step % every == 0 or event.step == event.total_steps:
                ctx.say(event.text)

        backend.train(ctx.artifacts_dir, TrainingCallbacks(on_start=started, on_step=step, on_message=ctx.say))
    ctx.say("talk to it with `imessage-finetune chat`")


STAGE = Stage(
    name="train",
    doc="Fine-tune with the configured backend (on this machine, or at a service); writes model.json.",
    run=run,
    reads=inputs,
    writes=outputs,
    keys=keys,
    side_keys=side_keys,
    params=params,
    watched=watched,
    code=code,
    keep_on_clean=True,
)
