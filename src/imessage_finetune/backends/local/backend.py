"""The local backend as a `Backend`: LoRA training on this machine, the trained model to talk
to or score, and the export of the merged weights. Nothing is sent anywhere."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.backends.interface import TrainingCallbacks, TrainingPlan, TrainingStep
from imessage_finetune.backends.local.base_model import folder_files
from imessage_finetune.backends.local.chat import LocalChat
from imessage_finetune.backends.local.training import (
    DEMO_NOTICE,
    LOCAL_LIBRARIES,
    SIDE_KEYS,
    TRAINING_KEYS,
    apple_silicon_notice,
    train_local,
)
from imessage_finetune.config import ConfigLike, RunOptions
from imessage_finetune.digests import package_versions


class LocalBackend:
    """`[finetune] backend = "local"`: PyTorch, transformers and peft on this machine."""

    name = "local"
    sends_data = False

    def __init__(self, config: ConfigLike, options: RunOptions | None = None) -> None:
        self.config = config
        self.options = options or RunOptions()

    def training_keys(self) -> tuple[str, ...]:
        """The config keys whose change gives another adapter."""
        return TRAINING_KEYS

    def training(self) -> TrainingPlan:
        """train.jsonl (and validation.jsonl) in, the adapter and model.json out; a base model
        given as a folder is watched file by file."""
        from imessage_finetune.backends.local.training import local_training_params

        config = self.config
        reads = [artifacts.TRAIN]
        if config.dataset.validation_share > 0:
            reads.append(artifacts.VALIDATION)
        demo = local_training_params(config).get("demo_model_version")
        return TrainingPlan(
            reads=tuple(reads),
            writes=(artifacts.MODEL, artifacts.TRAINING_LOG, artifacts.ADAPTER_CONFIG, artifacts.ADAPTER_WEIGHTS),
            keys=TRAINING_KEYS,
            side_keys=SIDE_KEYS,
            params={
                "libraries": package_versions(LOCAL_LIBRARIES),
                **({"demo_model_version": demo} if demo is not None else {}),
            },
            watched=tuple(folder_files(config.finetune.local.base_model, config.base_dir)),
            forgettable=(artifacts.MODEL, artifacts.ADAPTER, artifacts.CHECKPOINTS),
        )

    def train(self, artifacts_dir: Path, callbacks: TrainingCallbacks) -> Mapping[str, Any]:
        """Train the adapter (resuming a checkpoint of the same data and settings) and
        publish it with model.json."""
        local = self.config.finetune.local
        say = callbacks.on_message or (lambda text: None)
        if local.is_demo:
            say(DEMO_NOTICE)
        elif local.base_model.lower().endswith(".gguf"):
            say(f"loading and dequantizing {local.base_model}")
        else:
            say(f"loading {local.base_model} (downloaded into the Hugging Face cache the first time)")

        def examples(stats: dict[str, Any]) -> None:
            from imessage_finetune.backends.examples import describe_examples

            say(describe_examples(stats, local.max_seq_length))

        def started(device: str, examples: int, steps: int) -> None:
            say(f"{examples} examples, {steps} steps on {device} ({local.base_model})")
            notice = apple_silicon_notice(device)
            if notice:
                say(notice)
            if callbacks.on_start is not None:
                callbacks.on_start(device, examples, steps)

        def step(event: Any) -> None:
            if callbacks.on_step is not None:
                text = f"step {event.step}/{event.total_steps} (epoch {event.epoch}), training loss {event.loss}"
                callbacks.on_step(TrainingStep(event.step, event.total_steps, text))

        def resumed(step: int, total: int) -> None:
            say(f"resuming from the checkpoint at step {step} of {total}")
            if callbacks.on_resume is not None:
                callbacks.on_resume(step, total)

        model = train_local(
            self.config, artifacts_dir, on_start=started, on_event=step, on_resume=resumed, on_examples=examples
        )
        validation = (
            f", validation loss {model['validation_loss_start']} -> {model['validation_loss']}"
            if model["validation_loss"] is not None
            else ""
        )
        say(
            f"adapter {artifacts.ADAPTER.path(artifacts_dir)} ({model['steps']} steps; loss on training "
            f"examples {model['train_loss_start']} -> {model['train_loss']}{validation})"
        )
        return model

    def load(self, model: Mapping[str, Any], *, tuned: bool = True) -> LocalChat:
        """The base model with the adapter model.json describes (`tuned`), or the base model
        alone, at the commit the adapter was trained on."""
        return LocalChat(
            model, self.config.artifacts_dir, self.config.base_dir, self.config.finetune.local, tuned=tuned
        )

    def export(self, model: Mapping[str, Any], folder: Path) -> Path:
        """The adapter merged into the base weights (in float32, stored in the base's own
        precision), with the tokenizer and a generation config holding `chat`'s sampling
        settings, as a Hugging Face folder published whole into `folder` (0700/0600)."""
        from imessage_finetune.backends.local.export import export_merged

        config = self.config
        return export_merged(model, config.artifacts_dir, config.base_dir, config.finetune.local, folder)
