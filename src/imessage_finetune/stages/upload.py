"""Stage `upload`: the training files sent to the fine-tuning service, for a backend that
sends data (`artifacts/upload.json`, the receipt of what is there).

Before anything is sent the backend checks the files and the cost, the stage shows what will
leave the machine and asks (unless `[finetune] confirm = false` or `run --yes`).
"""

from __future__ import annotations

from typing import Any, cast

from imessage_finetune import artifacts
from imessage_finetune.backends import backend_for
from imessage_finetune.backends.interface import Sender
from imessage_finetune.config import Config, ConfigView
from imessage_finetune.errors import ServiceSetupError
from imessage_finetune.stages.stage import Stage, StageContext

# Where the data goes; the receipt holds the ids this endpoint gave.
KEYS = ("finetune.backend", "finetune.base_url")
# Read to check, disclose and send; the receipt does not depend on them.
SIDE_KEYS = (
    "finetune.model",
    "finetune.max_cost",
    "finetune.confirm",
    "finetune.api_key_file",
    "finetune.request_timeout",
)


def inputs(config: ConfigView) -> list[artifacts.Artifact]:
    """The files sent (validation.jsonl when one is held out) and the report disclosed."""
    read = [artifacts.TRAIN, artifacts.DATASET_REPORT]
    if config.dataset.validation_share > 0:
        read.append(artifacts.VALIDATION)
    return read


def params(config: ConfigView) -> dict[str, Any]:
    """The endpoint the data goes to."""
    return dict(backend_for(config).training().params)


def run(ctx: StageContext) -> None:
    """Check, disclose, ask, send; say what is at the service."""
    sender = cast(Sender, backend_for(ctx.config, options=ctx.options))
    disclosure = sender.disclose(ctx.artifacts_dir)
    cost = disclosure.estimated_cost_usd
    ctx.say(
        f"about to send {', '.join(disclosure.files)} to {disclosure.endpoint}: "
        f"{disclosure.examples} examples"
        + (f" (+{disclosure.validation_examples} validation)" if disclosure.validation_examples else "")
        + f" from {disclosure.conversations} conversations, {disclosure.tokens} tokens, "
        f"estimated cost {f'${cost:.2f}' if cost is not None else 'unknown'}"
    )
    for line in sender.notices():
        ctx.say(line)
    if ctx.config.finetune.confirm and not ctx.options.assume_yes:
        answer = ctx.ask("Send these files?")
        if answer is None:
            raise ServiceSetupError(
                "sending your messages needs a confirmation and there is no terminal to ask on: "
                "run `imessage-finetune run train --yes`, or set [finetune] confirm = false; "
                "nothing was sent"
            )
        if not answer:
            raise ServiceSetupError("not confirmed; nothing was sent")
    receipt, reused = sender.upload(ctx.artifacts_dir)
    files = ", ".join(f"{k} {v['id']}" for k, v in receipt["files"].items())
    ctx.say(files + (f" (already there, not sent again: {', '.join(reused)})" if reused else ""))


def applies(config: Config) -> bool:
    """Only a backend that sends the data has an upload stage."""
    return backend_for(config).sends_data


STAGE = Stage(
    name="upload",
    doc="Send train.jsonl to the fine-tuning service (asks first); writes upload.json.",
    run=run,
    reads=inputs,
    writes=(artifacts.UPLOAD,),
    keys=KEYS,
    side_keys=(*SIDE_KEYS, "dataset.validation_share"),
    params=params,
    applies=applies,
    not_applicable=(
        "the {backend} backend sends nothing, so there is no upload stage: run "
        '`imessage-finetune run train`, or set [finetune] backend = "openai"'
    ),
    keep_on_clean=True,
)
