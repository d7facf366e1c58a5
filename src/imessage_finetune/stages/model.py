"""Stage `train`: the fine-tuned model, described in `artifacts/model.json`.

With the local backend (`train_local`), a LoRA adapter is trained on this machine from
train.jsonl and published in `artifacts/local-model/adapter/`; nothing is sent anywhere.

With a remote backend (`train`), one fine-tuning job runs for the uploaded dataset and is
followed to the end.

The job is tagged with the dataset's hash and the training parameters. Before creating one,
the service is asked for a job with those tags, so a rerun after a crash, a kill or Ctrl-C
re-attaches to the same job instead of paying for a second; the job id is written to
`artifacts/job.json` the moment it is known. Leaving (Ctrl-C, a deadline) never cancels
the job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_dir, atomic_write
from imessage_finetune.backends.openai.service import FineTuneBackend, Job, JobEvent, ReadFailure, follow_job
from imessage_finetune.config import Config, FinetuneConfig
from imessage_finetune.errors import FineTuneError
from imessage_finetune.pipeline.fingerprint import file_digest, package_versions
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
    backend: FineTuneBackend, receipt: dict[str, Any], finetune: FinetuneConfig, out_dir: Path
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
    backend: FineTuneBackend,
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
    """Start or resume the job, follow it to success (through outages) and publish model.json."""
    job, created = start_or_resume(backend, receipt, finetune, out_dir)
    if on_start is not None:
        on_start(job, created)
    job = follow_job(
        backend,
        job.id,
        deadline=finetune.deadline_hours * 3600,
        poll_interval=finetune.poll_interval,
        on_status=on_status,
        on_event=on_event,
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
            round(job.trained_tokens / 1e6 * price, 2)
            if price is not None and job.trained_tokens is not None
            else None
        ),
    }
    validate_document(artifacts.MODEL, model)
    with atomic_write(artifacts.MODEL.path(out_dir)) as handle:
        handle.write(dump_json(model))
    return model


# [finetune.local] keys that do not change the trained weights: changing them retrains nothing.
LOCAL_NOT_TRAINING_KEYS = ("checkpoint_steps", "max_new_tokens", "temperature")
LOCAL_LIBRARIES = ("torch", "transformers", "peft")
DEMO_NOTICE = (
    "DEMONSTRATION: the base model is the tiny random model imessage-finetune builds itself; "
    "it shows the pipeline working and learns nothing useful. For a real model set "
    '[finetune.local] base_model = "Qwen/Qwen2.5-0.5B-Instruct".'
)


def local_training_params(config: Config) -> dict[str, Any]:
    """What the local training's result depends on, besides the data (the stage's parameters)."""
    from imessage_finetune.backends.local.tiny_model import DEMO_MODEL_VERSION

    local = config.section("finetune")["local"]
    params = {k: v for k, v in local.items() if k not in LOCAL_NOT_TRAINING_KEYS}
    if config.finetune.local.is_demo:
        params["demo_model_version"] = DEMO_MODEL_VERSION
    return params


def train_local(
    config: Config,
    out_dir: Path,
    *,
    on_start: Callable[[str, int, int], None] | None = None,
    on_event: Callable[[Any], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on train.jsonl on this machine; publish it and model.json.

    `on_start` gets the device, the number of examples and the number of steps. A run that
    was stopped resumes from its checkpoint when its data and settings are unchanged.
    """
    from imessage_finetune.backends import local
    from imessage_finetune.backends.local.checkpoints import CheckpointStore

    local.require()
    local.quiet_libraries()
    from imessage_finetune.backends.local import base_model
    from imessage_finetune.backends.local.examples import ExampleBuilder
    from imessage_finetune.backends.local.trainer import train_adapter

    settings = config.finetune.local
    device = local.resolve_device(settings.device)
    source = base_model.locate(settings.base_model, config.base_dir, out_dir)
    model, tokenizer, revision = base_model.load(source, device)
    files = {"train": artifacts.TRAIN.path(out_dir)}
    if config.dataset.validation_share > 0 and artifacts.VALIDATION.path(out_dir).is_file():
        files["validation"] = artifacts.VALIDATION.path(out_dir)
    builders = {kind: ExampleBuilder(tokenizer, settings.max_seq_length) for kind in files}
    tokenized = {kind: builders[kind].build(_jsonl(path)) for kind, path in files.items()}
    if not tokenized["train"]:
        raise FineTuneError(
            f"no training example is left after rendering with {settings.base_model}'s chat template "
            f"(dropped: {dict(builders['train'].stats.dropped)}); raise [finetune.local] max_seq_length "
            "or check that train.jsonl has assistant replies"
        )
    digests = {kind: file_digest(path) for kind, path in files.items()}
    run_id = hashlib.sha256(
        json.dumps(
            {"files": digests, "params": local_training_params(config), "revision": revision, "device": device},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
    store = CheckpointStore(artifacts.CHECKPOINTS.path(out_dir))
    adapted, result = train_adapter(
        model,
        tokenized["train"],
        tokenized.get("validation", []),
        settings,
        pad_token_id=tokenizer.pad_token_id,
        device=device,
        store=store,
        run_id=run_id,
        on_start=None if on_start is None else lambda steps: on_start(device, len(tokenized["train"]), steps),
        on_event=on_event,
        on_resume=on_resume,
    )
    adapter = _publish_adapter(adapted, artifacts.ADAPTER.path(out_dir), settings.base_model)
    stats = builders["train"].stats.as_dict()
    document = {
        "backend": "local",
        "model_id": f"{settings.base_model}+lora-{adapter[:12]}",
        "base_model": settings.base_model,
        "base_model_revision": revision,
        "demonstration": source.is_demo,
        "notice": DEMO_NOTICE if source.is_demo else None,
        "adapter_path": artifacts.ADAPTER.filename,
        "adapter_sha256": adapter,
        "device": device,
        "hyperparameters": {k: v for k, v in local_training_params(config).items() if k not in ("base_model", "seed", "device")},
        "seed": settings.seed,
        "system_prompt": config.dataset.system_prompt,
        "training_file": {"name": artifacts.TRAIN.filename, "sha256": digests["train"]},
        "validation_file": (
            {"name": artifacts.VALIDATION.filename, "sha256": digests["validation"]} if "validation" in files else None
        ),
        "examples": stats,
        "validation_examples": len(tokenized.get("validation", [])),
        "steps": result.steps,
        "trained_tokens": stats["trained_tokens"] * settings.epochs,
        "train_loss_start": result.train_loss_start,
        "train_loss": result.train_loss,
        "validation_loss_start": result.validation_loss_start,
        "validation_loss": result.validation_loss,
        "versions": package_versions(LOCAL_LIBRARIES),
    }
    validate_document(artifacts.MODEL, document)
    with atomic_write(artifacts.MODEL.path(out_dir)) as handle:
        handle.write(dump_json(document))
    store.clear()  # only now: a kill before model.json is written resumes, not restarts
    return document


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield load_json(line)


def _publish_adapter(model: Any, folder: Path, base_model: str) -> str:
    """Save the adapter into `folder` (replaced whole); return its weights' sha256.

    The adapter's config names the base model as configured, not the folder it was loaded
    from, so two builds in different places write the same bytes.
    """
    with atomic_dir(folder) as staging:
        model.save_pretrained(staging)
        config_path = staging / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = base_model
        if isinstance(adapter_config.get("target_modules"), list):  # peft writes a set's order
            adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
        config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (staging / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    return file_digest(folder / "adapter_model.safetensors")
