"""`MlxBackend`: the MLX backend as the rest of the package sees it (`backends.interface`):
train an adapter from train.jsonl and describe it in model.json, load the tuned (or base)
model, export it merged into the base weights as a Hugging Face folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_dir, atomic_write
from imessage_finetune.backends.interface import GenerationSettings, TrainingCallbacks, TrainingPlan, TrainingStep
from imessage_finetune.backends.loss_log import LossLog, publish_log
from imessage_finetune.backends.mlx import quiet_libraries, require, resolve_device
from imessage_finetune.backends.training import on_apple_silicon
from imessage_finetune.config import ConfigLike, MlxConfig, RunOptions
from imessage_finetune.digests import file_digest, package_versions
from imessage_finetune.errors import TrainingError
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.schema_check import validate_document

if TYPE_CHECKING:
    from imessage_finetune.backends.mlx.chat import MlxChatModel

# [finetune.mlx] keys that give another adapter when they change. Not among them:
# checkpoint_steps (read while training, the weights do not depend on it) and `chat`'s
# max_new_tokens and temperature, so changing those retrains nothing.
SIDE_KEYS = ("finetune.mlx.checkpoint_steps",)
NOT_TRAINING_KEYS = ("checkpoint_steps", "max_new_tokens", "temperature")
MLX_KEYS = tuple(f.name for f in dataclasses.fields(MlxConfig) if f.name not in NOT_TRAINING_KEYS)
TRAINING_KEYS = (
    "finetune.backend",
    *(f"finetune.mlx.{key}" for key in MLX_KEYS),
    "dataset.system_prompt",
    "dataset.partner_in_prompt",
    "dataset.validation_share",
)
LIBRARIES = ("mlx", "mlx-lm", "transformers")
DEMO_NOTICE = (
    "DEMONSTRATION: the base model is the tiny random model imessage-finetune builds itself; "
    "it shows the pipeline working and learns nothing useful. For a real model set "
    '[finetune.mlx] base_model = "Qwen/Qwen2.5-0.5B-Instruct", or a 4-bit mlx-community model.'
)


def apple_silicon_notice(device: str) -> str | None:
    """On Apple silicon, that MLX trains and on what; None on other machines."""
    if not on_apple_silicon():
        return None
    where = "Apple silicon's GPU" if device == "gpu" else "the CPU"
    return f'training with MLX on {where} ([finetune] backend = "mlx")'


class MlxBackend:
    """LoRA (QLoRA on a quantized base model) with MLX, on this machine; sends nothing."""

    name = "mlx"
    sends_data = False

    def __init__(self, config: ConfigLike, options: RunOptions | None = None) -> None:
        self.config = config
        self.options = options or RunOptions()

    @property
    def settings(self) -> MlxConfig:
        """`[finetune.mlx]` (read when used: through a stage's view, each key is checked)."""
        return self.config.finetune.mlx

    # What the train stage depends on -------------------------------------------------

    def training_keys(self) -> tuple[str, ...]:
        """The config keys whose change gives another trained model."""
        return TRAINING_KEYS

    def training_params(self) -> dict[str, Any]:
        """The [finetune.mlx] settings the adapter depends on (with the demo model's version)."""
        from imessage_finetune.backends.mlx.demo_model import DEMO_MODEL_VERSION

        settings = self.settings
        params: dict[str, Any] = {key: getattr(settings, key) for key in MLX_KEYS}
        if settings.is_demo:
            params["demo_model_version"] = DEMO_MODEL_VERSION
        return params

    def training(self) -> TrainingPlan:
        """train.jsonl (and validation.jsonl) in, the adapter and model.json out; a base model
        given as a folder is watched file by file."""
        from imessage_finetune.backends.mlx.base_model import folder_files
        from imessage_finetune.backends.mlx.demo_model import DEMO_MODEL_VERSION

        config = self.config
        reads = [artifacts.TRAIN]
        if config.dataset.validation_share > 0:
            reads.append(artifacts.VALIDATION)
        return TrainingPlan(
            reads=tuple(reads),
            writes=(
                artifacts.MODEL,
                artifacts.TRAINING_LOG,
                artifacts.MLX_ADAPTER_CONFIG,
                artifacts.MLX_ADAPTER_WEIGHTS,
            ),
            keys=TRAINING_KEYS,
            side_keys=SIDE_KEYS,
            params={
                "libraries": package_versions(LIBRARIES),
                **({"demo_model_version": DEMO_MODEL_VERSION} if self.settings.is_demo else {}),
            },
            watched=tuple(folder_files(self.settings.base_model, config.base_dir)),
            forgettable=(artifacts.MODEL, artifacts.MLX_ADAPTER, artifacts.MLX_CHECKPOINTS),
        )

    # Training --------------------------------------------------------------------------

    def train(self, out_dir: Path, callbacks: TrainingCallbacks) -> dict[str, Any]:
        """Fine-tune a LoRA adapter on train.jsonl here; publish it and model.json (returned).

        A run that was stopped resumes from its checkpoint when its data and settings are
        unchanged.
        """
        require()
        quiet_libraries()
        from imessage_finetune.backends.examples import ExampleBuilder, describe_examples
        from imessage_finetune.backends.mlx import base_model
        from imessage_finetune.backends.mlx.checkpoints import CheckpointStore
        from imessage_finetune.backends.mlx.trainer import add_lora, train_adapter

        settings, config = self.settings, self.config
        say = callbacks.on_message or (lambda text: None)
        say(
            DEMO_NOTICE
            if settings.is_demo
            else f"loading {settings.base_model} (downloaded into the Hugging Face cache the first time)"
        )
        device = resolve_device(settings.device)
        notice = apple_silicon_notice(device)
        if notice:
            say(notice)
        source = base_model.locate(settings.base_model, config.base_dir, out_dir)
        model, tokenizer = base_model.load(source)
        qlora = base_model.is_quantized(model)
        files = {"train": artifacts.TRAIN.path(out_dir)}
        if config.dataset.validation_share > 0 and artifacts.VALIDATION.path(out_dir).is_file():
            files["validation"] = artifacts.VALIDATION.path(out_dir)
        builders = {kind: ExampleBuilder(tokenizer._tokenizer, settings.max_seq_length) for kind in files}
        tokenized = {kind: builders[kind].build(_jsonl(path)) for kind, path in files.items()}
        say(describe_examples(builders["train"].stats.as_dict(), settings.max_seq_length))
        if not tokenized["train"]:
            raise TrainingError(
                f"no training example is left after rendering with {settings.base_model}'s chat template "
                f"(dropped: {dict(builders['train'].stats.dropped)}); raise [finetune.mlx] max_seq_length "
                "or check that train.jsonl has assistant replies"
            )
        digests = {kind: file_digest(path) for kind, path in files.items()}
        run_id = hashlib.sha256(
            json.dumps(
                {"files": digests, "params": self.training_params(), "revision": source.revision, "device": device},
                sort_keys=True,
            ).encode()
        ).hexdigest()[:32]
        if qlora:
            say(f"{settings.base_model} is quantized: training LoRA on its quantized weights (QLoRA)")
        adapter_config = add_lora(model, settings)

        def started(steps: int) -> None:
            examples = len(tokenized["train"])
            say(f"{examples} examples, {steps} steps on {device} with MLX ({settings.base_model})")
            if callbacks.on_start is not None:
                callbacks.on_start(device, examples, steps)

        # Beside the checkpoints (whose folder keeps only the newest), continued by a resumed run.
        log = LossLog(self.name, run_id, artifacts.MLX_LOSS_LOG_PARTIAL.path(out_dir))

        def step(event: Any) -> None:
            log.add(event.step, event.loss, epoch=event.epoch, total_steps=event.total_steps)
            if callbacks.on_step is not None:
                text = f"step {event.step}/{event.total_steps} (epoch {event.epoch}), training loss {event.loss}"
                callbacks.on_step(TrainingStep(event.step, event.total_steps, text))

        def resumed(step: int, total: int) -> None:
            say(f"resuming from the checkpoint at step {step} of {total}")
            if callbacks.on_resume is not None:
                callbacks.on_resume(step, total)

        result = train_adapter(
            model,
            tokenized["train"],
            tokenized.get("validation", []),
            settings,
            store=CheckpointStore(artifacts.MLX_CHECKPOINTS.path(out_dir)),
            run_id=run_id,
            on_start=started,
            on_event=step,
            on_resume=resumed,
        )
        adapter = _publish_adapter(model, adapter_config, artifacts.MLX_ADAPTER.path(out_dir), settings.base_model)
        stats = builders["train"].stats.as_dict()
        document = {
            "backend": self.name,
            "model_id": f"{settings.base_model}+lora-{adapter[:12]}",
            "base_model": settings.base_model,
            "base_model_revision": source.revision,
            "demonstration": source.is_demo,
            "notice": DEMO_NOTICE if source.is_demo else None,
            "adapter_path": artifacts.MLX_ADAPTER.filename,
            "adapter_sha256": adapter,
            "device": device,
            "hyperparameters": {
                **{k: v for k, v in self.training_params().items() if k not in ("base_model", "seed", "device")},
                "qlora": qlora,
            },
            "seed": settings.seed,
            "system_prompt": config.dataset.system_prompt,
            "partner_in_prompt": config.dataset.partner_in_prompt,
            "training_file": {"name": artifacts.TRAIN.filename, "sha256": digests["train"]},
            "validation_file": (
                {"name": artifacts.VALIDATION.filename, "sha256": digests["validation"]}
                if "validation" in files
                else None
            ),
            "examples": stats,
            "validation_examples": len(tokenized.get("validation", [])),
            "steps": result.steps,
            "trained_tokens": stats["trained_tokens_per_epoch"] * settings.epochs,
            "train_loss_start": result.train_loss_start,
            "train_loss": result.train_loss,
            "validation_loss_start": result.validation_loss_start,
            "validation_loss": result.validation_loss,
            "versions": package_versions(LIBRARIES),
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
        # Only now: a kill before model.json is written resumes, not restarts.
        CheckpointStore(artifacts.MLX_CHECKPOINTS.path(out_dir)).clear()
        validation = (
            f", validation loss {document['validation_loss_start']} -> {document['validation_loss']}"
            if document["validation_loss"] is not None
            else ""
        )
        say(
            f"adapter {artifacts.MLX_ADAPTER.path(out_dir)} ({document['steps']} steps; loss on training "
            f"examples {document['train_loss_start']} -> {document['train_loss']}{validation})"
        )
        return document

    # The trained model -----------------------------------------------------------------

    def load(self, model: Mapping[str, Any], *, tuned: bool = True) -> MlxChatModel:
        """The model model.json describes (`tuned`), or the base model it was trained from, as
        an `MlxChatModel`."""
        require()
        quiet_libraries()
        from imessage_finetune.backends.mlx.chat import TOP_P, MlxChatModel

        _, base, tokenizer = self._base(model)
        if tuned:
            from mlx_lm.tuner.utils import load_adapters

            load_adapters(base, str(self._adapter(model)))
        settings = self.settings
        return MlxChatModel(
            base,
            tokenizer,
            model_id=model["model_id"] if tuned else model["base_model"],
            system_prompt=model.get("system_prompt") or "",
            # As in training, for score(): the length the model was trained to.
            max_seq_length=model.get("hyperparameters", {}).get("max_seq_length", settings.max_seq_length),
            defaults=GenerationSettings(
                max_tokens=settings.max_new_tokens, temperature=settings.temperature, top_p=TOP_P, seed=settings.seed
            ),
        )

    def export(self, model: Mapping[str, Any], folder: Path) -> Path:
        """Write the tuned model, the adapter fused into the base weights (dequantized if the
        base model was quantized: a plain model transformers and llama.cpp's converter read),
        as a Hugging Face folder into `folder` (replaced whole); return it."""
        require()
        quiet_libraries()
        from mlx.utils import tree_unflatten
        from mlx_lm.tuner.utils import load_adapters
        from mlx_lm.utils import dequantize_model, save_config, save_model

        source, base, tokenizer = self._base(model)
        load_adapters(base, str(self._adapter(model)))
        fused = [(name, layer.fuse(dequantize=True)) for name, layer in base.named_modules() if hasattr(layer, "fuse")]
        base.update_modules(tree_unflatten(fused))
        base = dequantize_model(base)
        source_config = json.loads((source.folder / "config.json").read_text(encoding="utf-8"))
        for key in ("quantization", "quantization_config"):
            source_config.pop(key, None)
        with atomic_dir(folder) as staging:
            save_model(staging, base, donate_model=False)
            save_config(source_config, staging / "config.json")
            tokenizer._tokenizer.save_pretrained(staging)
            generation = source.folder / "generation_config.json"
            if generation.is_file():
                shutil.copyfile(generation, staging / generation.name)
        return folder

    def _base(self, model: Mapping[str, Any]) -> tuple[Any, Any, Any]:
        """Where the base model of `model` is (at the revision it was trained on), the model
        and its tokenizer."""
        from imessage_finetune.backends.mlx import base_model

        if model.get("backend") != self.name:
            raise TrainingError(
                f"model.json describes a model of the {model.get('backend')!r} backend, not an MLX one: "
                "set [finetune] backend to match, or run `imessage-finetune run train` again"
            )
        resolve_device(self.settings.device)
        source = base_model.locate(
            model["base_model"], self.config.base_dir, self.config.artifacts_dir, model.get("base_model_revision")
        )
        return (source, *base_model.load(source))

    def _adapter(self, model: Mapping[str, Any]) -> Path:
        adapter = self.config.artifacts_dir / model["adapter_path"]
        if not all((adapter / name).is_file() for name in artifacts.MLX_ADAPTER_FILES):
            raise TrainingError(
                f"the trained adapter is missing from {adapter}: run `imessage-finetune run train` to train it again"
            )
        return adapter


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield load_json(line)


def _publish_adapter(model: Any, adapter_config: dict[str, Any], folder: Path, base_model: str) -> str:
    """Save the adapter in mlx-lm's format (adapters.safetensors, adapter_config.json) into
    `folder` (replaced whole); return its weights' sha256. The config names the base model as
    configured, so two builds in different places write the same bytes."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    with atomic_dir(folder) as staging:
        mx.save_safetensors(str(staging / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
        document = {**adapter_config, "base_model": base_model}
        text = json.dumps(document, indent=2, sort_keys=True) + "\n"
        (staging / "adapter_config.json").write_text(text, encoding="utf-8")
    return file_digest(folder / "adapters.safetensors")
