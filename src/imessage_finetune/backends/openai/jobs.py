"""Training at the service: one fine-tuning job for the uploaded dataset, followed to the end,
and `artifacts/model.json` describing the model it made.

The job is tagged with the dataset's hash and the training parameters. Before creating one,
the service is asked for a job with those tags, so a rerun after a crash, a kill or Ctrl-C
re-attaches to the same job instead of paying for a second; the job id is written to
`artifacts/job.json` the moment it is known. Leaving (Ctrl-C, a deadline) never cancels
the job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.backends.loss_log import LossLog, publish_log
from imessage_finetune.backends.openai.service import FineTuneService, Job, JobEvent, ReadFailure, follow_job
from imessage_finetune.config import FinetuneConfig
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.schema_check import validate_document

PIPELINE_TAG = "imessage-finetune"
TRAINING_KEYS = ("model", "suffix", "n_epochs", "batch_size", "learning_rate_multiplier", "seed")


def hyperparameters(finetune: FinetuneConfig) -> dict[str, int | float | str]:
    """The job's hyperparameters as the service takes them."""
    return {
        "n_epochs": finetune.n_epochs,
        "batch_size": finetune.batch_size,
        "learning_rate_multiplier": finetune.learning_rate_multiplier,
    }


def job_metadata(receipt: dict[str, Any], finetune: FinetuneConfig) -> dict[str, str]:
    """Tags that identify this dataset and these parameters at the service."""
    params = json.dumps({k: getattr(finetune, k) for k in TRAINING_KEYS}, sort_keys=True)
    return {
        "pipeline": PIPELINE_TAG,
        "dataset": receipt["dataset_sha256"][:32],
        "params": hashlib.sha256(params.encode()).hexdigest()[:32],
    }


def start_or_resume(
    backend: FineTuneService, receipt: dict[str, Any], finetune: FinetuneConfig, out_dir: Path
) -> tuple[Job, bool]:
    """The job for this dataset and these parameters: found at the service, or created once.

    Returns the job and whether this call created it. The job id is recorded at once.
    """
    metadata = job_metadata(receipt, finetune)
    job = backend.find_job(metadata)
    created = job is None
    if job is None:
        validation = receipt["files"].get("validation")
        job = backend.create_job(
            training_file=receipt["files"]["train"]["id"],
            validation_file=validation["id"] if validation else None,
            model=finetune.model,
            suffix=finetune.suffix or None,
            hyperparameters=hyperparameters(finetune),
            seed=finetune.seed,
            metadata=metadata,
        )
    record_job(out_dir, job, metadata)
    return job, created


def record_job(out_dir: Path, job: Job, metadata: dict[str, str]) -> None:
    """Write artifacts/job.json: the job being followed, so commands can find it."""
    with atomic_write(artifacts.JOB.path(out_dir)) as handle:
        handle.write(dump_json({"job_id": job.id, "model": job.model, "metadata": metadata}))


def recorded_job_id(out_dir: Path) -> str | None:
    """The job id in artifacts/job.json, if any."""
    path = artifacts.JOB.path(out_dir)
    return load_json(path.read_bytes())["job_id"] if path.is_file() else None


def train(
    backend: FineTuneService,
    receipt: dict[str, Any],
    finetune: FinetuneConfig,
    out_dir: Path,
    *,
    on_start: Callable[[Job, bool], None] | None = None,
    on_status: Callable[[Job], None] | None = None,
    on_event: Callable[[JobEvent], None] | None = None,
    on_retry: Callable[[ReadFailure], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Start or resume the job, follow it to success (through outages) and publish model.json
    (and training-log.json, the loss by step the service reported)."""
    job, created = start_or_resume(backend, receipt, finetune, out_dir)
    if on_start is not None:
        on_start(job, created)
    log = LossLog(receipt["backend"])

    def event(e: JobEvent) -> None:
        if e.step is not None:
            log.add(e.step, e.train_loss, total_steps=e.total_steps, valid_loss=e.valid_loss)
        if on_event is not None:
            on_event(e)

    job = follow_job(
        backend,
        job.id,
        deadline=finetune.deadline_hours * 3600,
        poll_interval=finetune.poll_interval,
        on_status=on_status,
        on_event=event,
        on_retry=on_retry,
        sleep=sleep,
    )
    price = finetune.price_per_million_tokens.get(finetune.model)
    validation = receipt["files"].get("validation")
    model = {
        "backend": receipt["backend"],
        "endpoint": receipt["endpoint"],
        "model_id": job.fine_tuned_model,
        "job_id": job.id,
        "base_model": job.model,
        "training_file": receipt["files"]["train"]["id"],
        "validation_file": validation["id"] if validation else None,
        "hyperparameters": hyperparameters(finetune),
        "seed": finetune.seed,
        "suffix": finetune.suffix,
        "trained_tokens": job.trained_tokens,
        "cost_usd": (
            round(job.trained_tokens / 1e6 * price, 2) if price is not None and job.trained_tokens is not None else None
        ),
    }
    steps = log.ordered()
    publish_log(
        out_dir,
        log.document(
            job_id=job.id,
            trained_tokens=job.trained_tokens,
            last_step=steps[-1]["step"] if steps else None,
            last_train_loss=steps[-1]["loss"] if steps else None,
            last_valid_loss=next((s["valid_loss"] for s in reversed(steps) if "valid_loss" in s), None),
        ),
    )
    validate_document(artifacts.MODEL, model)
    with atomic_write(artifacts.MODEL.path(out_dir)) as handle:
        handle.write(dump_json(model))
    return model
