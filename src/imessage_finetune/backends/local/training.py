"""Training on this machine: a LoRA adapter trained from train.jsonl, published in
`artifacts/local-model/adapter/`, and `artifacts/model.json` describing it. Nothing is sent
anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_dir, atomic_write
from imessage_finetune.backends.loss_log import LossLog, publish_log
from imessage_finetune.config import ConfigLike
from imessage_finetune.digests import file_digest, package_versions
from imessage_finetune.errors import TrainingError
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.schema_check import validate_document

# [finetune.local] keys that give another adapter when they change. Not among them:
# checkpoint_steps (read while training, the weights do not depend on it) and `chat`'s
# max_new_tokens and temperature, so changing those retrains nothing.
LOCAL_KEYS = (
    "base_model",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "learning_rate",
    "epochs",
    "batch_size",
    "max_seq_length",
    "gradient_checkpointing",
    "seed",
    "device",
)
# Every config key `train_local` reads, and those of them the adapter does not depend on.
TRAINING_KEYS = (
    "finetune.backend",
    *(f"finetune.local.{key}" for key in LOCAL_KEYS),
    "dataset.system_prompt",
    "dataset.partner_in_prompt",
    "dataset.validation_share",
)
SIDE_KEYS = ("finetune.local.checkpoint_steps",)
LOCAL_LIBRARIES = ("torch", "transformers", "peft")
DEMO_NOTICE = (
    "DEMONSTRATION: the base model is the tiny random model imessage-finetune builds itself; "
    "it shows the pipeline working and learns nothing useful. For a real model set "
    '[finetune.local] base_model = "Qwen/Qwen2.5-0.5B-Instruct".'
)


def apple_silicon_notice(device: str) -> str | None:
    """On Apple silicon, that PyTorch trains and what the mlx backend offers; None elsewhere."""
    from imessage_finetune.backends.training import on_apple_silicon

    if not on_apple_silicon():
        return None
    if all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm")):
        other = 'MLX is installed too: backend = "mlx" trains with it instead'
    else:
        other = "the mlx backend (pip install 'imessage-finetune[mlx]', backend = \"mlx\") trains with MLX instead"
    return (
        f'training with PyTorch on {device} ([finetune] backend = "local"); {other}, made for Apple '
        "silicon and able to train 4-bit models (QLoRA), which PyTorch cannot do on a Mac"
    )


def local_training_params(config: ConfigLike) -> dict[str, Any]:
    """The [finetune.local] settings the adapter depends on (with the demo model's version)."""
    from imessage_finetune.backends.local.tiny_model import DEMO_MODEL_VERSION

    local = config.finetune.local
    params: dict[str, Any] = {key: getattr(local, key) for key in LOCAL_KEYS}
    if local.is_demo:
        params["demo_model_version"] = DEMO_MODEL_VERSION
    return params


def train_local(
    config: ConfigLike,
    out_dir: Path,
    *,
    on_start: Callable[[str, int, int], None] | None = None,
    on_event: Callable[[Any], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
    on_examples: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on train.jsonl on this machine; publish it and model.json.

    `on_examples` gets what became of train.jsonl's conversations (model.json's `examples`),
    `on_start` the device, the number of examples and the number of steps. A run that was
    stopped resumes from its checkpoint when its data and settings are unchanged.
    """
    from imessage_finetune.backends import local
    from imessage_finetune.backends.local.checkpoints import CheckpointStore

    local.require()
    local.quiet_libraries()
    from imessage_finetune.backends.examples import ExampleBuilder
    from imessage_finetune.backends.local import base_model
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
    if on_examples is not None:
        on_examples(builders["train"].stats.as_dict())
    if not tokenized["train"]:
        raise TrainingError(
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
    # Beside the checkpoints (whose folder keeps only the newest), continued by a resumed run.
    log = LossLog("local", run_id, artifacts.LOSS_LOG_PARTIAL.path(out_dir))

    def event(e: Any) -> None:
        log.add(e.step, e.loss, epoch=e.epoch, total_steps=e.total_steps)
        if on_event is not None:
            on_event(e)

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
        on_event=event,
        on_resume=on_resume,
    )
    adapter = _publish_adapter(adapted, artifacts.ADAPTER.path(out_dir), settings.base_model)
    stats = builders["train"].stats.as_dict()
    document = {
        "backend": "local",
        "model_id": f"{settings.base_model}+lora-{adapter[:12]}",
        "base_model": settings.base_model,
        "base_model_revision": revision,
        "base_model_sha256": file_digest(source.file) if source.file is not None else None,
        "demonstration": source.is_demo,
        "notice": DEMO_NOTICE if source.is_demo else None,
        "adapter_path": artifacts.ADAPTER.filename,
        "adapter_sha256": adapter,
        "device": device,
        "hyperparameters": {
            k: v for k, v in local_training_params(config).items() if k not in ("base_model", "seed", "device")
        },
        "seed": settings.seed,
        "system_prompt": config.dataset.system_prompt,
        "partner_in_prompt": config.dataset.partner_in_prompt,
        "training_file": {"name": artifacts.TRAIN.filename, "sha256": digests["train"]},
        "validation_file": (
            {"name": artifacts.VALIDATION.filename, "sha256": digests["validation"]} if "validation" in files else None
        ),
        "examples": stats,
        "validation_examples": len(tokenized.get("validation", [])),
        "steps": result.steps,
        "trained_tokens": stats["trained_tokens_per_epoch"] * settings.epochs,
        "train_loss_start": result.train_loss_start,
        "train_loss": result.train_loss,
        "validation_loss_start": result.validation_loss_start,
        "validation_loss": result.validation_loss,
        "versions": package_versions(LOCAL_LIBRARIES),
    }
    publish_log(
        out_dir,
        log.document(
            train_loss_start=result.train_loss_start,
            train_loss=result.train_loss,
            validation_loss_start=result.validation_loss_start,
            validation_loss=result.validation_loss,
        ),
    )
    validate_document(artifacts.MODEL, document)
    with atomic_write(artifacts.MODEL.path(out_dir)) as handle:
        handle.write(dump_json(document))
    log.discard_partial()
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
