"""`MlxBackend`: the MLX backend as the rest of the package sees it (`backends.interface`):
train an adapter from train.jsonl and describe it in model.json, load the tuned (or base)
model, export it merged into the base weights as a Hugging Face folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_dir, atomic_write
from imessage_finetune.config import Config
from imessage_finetune.errors import FineTuneError
from imessage_finetune.fingerprint import file_digest, package_versions
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.validation import validate_document

from .. import apple_silicon_notice
from ..interface import GenerationSettings, TrainingCallbacks
from . import quiet_libraries, require, resolve_device

# [finetune.mlx] keys that do not change the trained weights: changing them retrains nothing.
NOT_TRAINING_KEYS = ("checkpoint_steps", "max_new_tokens", "temperature")
LIBRARIES = ("mlx", "mlx-lm", "transformers")
DEMO_NOTICE = (
    "DEMONSTRATION: the base model is the tiny random model imessage-finetune builds itself; "
    "it shows the pipeline working and learns nothing useful. For a real model set "
    '[finetune.mlx] base_model = "Qwen/Qwen2.5-0.5B-Instruct", or a 4-bit mlx-community model.'
)


class MlxBackend:
    """LoRA (QLoRA on a quantized base model) with MLX, on this machine; sends nothing."""

    name = "mlx"
    sends_data = False

    def __init__(self, config: Config) -> None:
        self.config = config
        self.settings = config.finetune.mlx

    # What the train stage depends on -------------------------------------------------

    def training_keys(self) -> tuple[str, ...]:
        """The [finetune.mlx] keys whose change gives another trained model."""
        return tuple(f"finetune.mlx.{k}" for k in self.config.section("finetune")["mlx"] if k not in NOT_TRAINING_KEYS)

    def training_params(self) -> dict[str, Any]:
        """What the trained adapter depends on besides the data (the stage's parameters)."""
        from .demo_model import DEMO_MODEL_VERSION

        params = {k: v for k, v in self.config.section("finetune")["mlx"].items() if k not in NOT_TRAINING_KEYS}
        if self.settings.is_demo:
            params["demo_model_version"] = DEMO_MODEL_VERSION
        return params

    def watched_files(self) -> list[Path]:
        """The base model's files when it is a folder here: changing them retrains."""
        from .base_model import folder_files

        return folder_files(self.settings.base_model, self.config.base_dir)

    @staticmethod
    def published_files(out_dir: Path) -> list[Path]:
        """The adapter's files, beside model.json: the stage reruns when one is missing."""
        return [artifacts.MLX_ADAPTER.path(out_dir) / name for name in artifacts.MLX_ADAPTER_FILES]

    @staticmethod
    def libraries() -> dict[str, str]:
        """The versions of the libraries training runs on (a new version retrains)."""
        return package_versions(LIBRARIES)

    # Training --------------------------------------------------------------------------

    def train(self, out_dir: Path, callbacks: TrainingCallbacks = TrainingCallbacks()) -> dict[str, Any]:
        """Fine-tune a LoRA adapter on train.jsonl here; publish it and model.json (returned).

        A run that was stopped resumes from its checkpoint when its data and settings are
        unchanged.
        """
        require()
        quiet_libraries()
        from ..examples import ExampleBuilder
        from . import base_model
        from .checkpoints import CheckpointStore
        from .trainer import add_lora, train_adapter

        settings, config = self.settings, self.config
        if callbacks.on_message is not None:
            callbacks.on_message(
                DEMO_NOTICE
                if settings.is_demo
                else f"loading {settings.base_model} (downloaded into the Hugging Face cache the first time)"
            )
        device = resolve_device(settings.device)
        notice = apple_silicon_notice(self.name, device)
        if notice and callbacks.on_message is not None:
            callbacks.on_message(notice)
        source = base_model.locate(settings.base_model, config.base_dir, out_dir)
        model, tokenizer = base_model.load(source)
        qlora = base_model.is_quantized(model)
        files = {"train": artifacts.TRAIN.path(out_dir)}
        if config.dataset.validation_share > 0 and artifacts.VALIDATION.path(out_dir).is_file():
            files["validation"] = artifacts.VALIDATION.path(out_dir)
        builders = {kind: ExampleBuilder(tokenizer._tokenizer, settings.max_seq_length) for kind in files}
        tokenized = {kind: builders[kind].build(_jsonl(path)) for kind, path in files.items()}
        if not tokenized["train"]:
            raise FineTuneError(
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
        if callbacks.on_message is not None and qlora:
            callbacks.on_message(f"{settings.base_model} is quantized: training LoRA on its quantized weights (QLoRA)")
        adapter_config = add_lora(model, settings)
        on_start = callbacks.on_start
        result = train_adapter(
            model,
            tokenized["train"],
            tokenized.get("validation", []),
            settings,
            store=CheckpointStore(artifacts.MLX_CHECKPOINTS.path(out_dir)),
            run_id=run_id,
            on_start=None if on_start is None else lambda steps: on_start(device, len(tokenized["train"]), steps),
            on_event=callbacks.on_step,
            on_resume=callbacks.on_resume,
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
            "training_file": {"name": artifacts.TRAIN.filename, "sha256": digests["train"]},
            "validation_file": (
                {"name": artifacts.VALIDATION.filename, "sha256": digests["validation"]}
                if "validation" in files
                else None
            ),
            "examples": stats,
            "validation_examples": len(tokenized.get("validation", [])),
            "steps": result.steps,
            "trained_tokens": stats["trained_tokens"] * settings.epochs,
            "train_loss_start": result.train_loss_start,
            "train_loss": result.train_loss,
            "validation_loss_start": result.validation_loss_start,
            "validation_loss": result.validation_loss,
            "versions": self.libraries(),
        }
        validate_document(artifacts.MODEL, document)
        with atomic_write(artifacts.MODEL.path(out_dir)) as handle:
            handle.write(dump_json(document))
        # Only now: a kill before model.json is written resumes, not restarts.
        CheckpointStore(artifacts.MLX_CHECKPOINTS.path(out_dir)).clear()
        return document

    # The trained model -----------------------------------------------------------------

    def load(self, model: Mapping[str, Any], *, tuned: bool = True) -> Any:
        """The model model.json describes (`tuned`), or the base model it was trained from, as
        an `MlxChatModel`."""
        require()
        quiet_libraries()
        from .chat import TOP_P, MlxChatModel

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
        from . import base_model

        if model.get("backend") != self.name:
            raise FineTuneError(
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
            raise FineTuneError(
                f"the trained adapter is missing from {adapter}: run `imessage-finetune run train` "
                "to train it again"
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
