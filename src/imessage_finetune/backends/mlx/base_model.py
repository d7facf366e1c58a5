"""Finding and loading the MLX backend's base model: a Hugging Face id, a folder, or the demo.

mlx-lm loads a Hugging Face folder (config.json, safetensors weights, the tokenizer) of the
architectures it implements: the original models (`Qwen/Qwen2.5-0.5B-Instruct`) and the
`mlx-community` conversions, quantized ones included (a 4-bit model trains as QLoRA).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.config import DEMO_BASE_MODEL
from imessage_finetune.errors import TrainingError

# What a model folder needs, as mlx-lm downloads it (no other weights formats, no images).
HUB_FILES = [
    "*.json",
    "model*.safetensors",
    "*.py",
    "*.txt",
    "*.jsonl",
    "*.jinja",
    "tokenizer.model",
    "*.tiktoken",
    "tiktoken.model",
]


class BaseModelNotFound(TrainingError):
    """The base model is neither a folder here nor in (or downloadable to) the Hugging Face cache."""


@dataclass(frozen=True)
class BaseModelSource:
    """Where the base model is: `name` as configured, `folder` on this machine, and the Hub
    commit it was taken at (None for a folder or the demo model)."""

    name: str
    folder: Path
    is_demo: bool
    revision: str | None


def locate(name: str, base_dir: Path, artifacts_dir: Path, revision: str | None = None) -> BaseModelSource:
    """The folder `[finetune.mlx] base_model` points to: the demo model (built if missing), a
    folder (relative to the config file), or a Hugging Face id, taken from the cache, or
    downloaded into it the first time. `revision` pins a Hub commit (for `chat`: the one the
    adapter was trained on)."""
    if name == DEMO_BASE_MODEL:
        from imessage_finetune.backends.mlx.demo_model import build_demo_model, is_current

        folder = artifacts.MLX_DEMO_BASE_MODEL.path(artifacts_dir)
        if not is_current(folder):
            build_demo_model(folder)
        return BaseModelSource(name, folder, is_demo=True, revision=None)
    folder = _folder(name, base_dir)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BaseModelNotFound(
                f"[finetune.mlx] base_model {name!r} is a folder without config.json: point it at "
                "a Hugging Face model folder (as `hf download` or mlx_lm.convert writes it)"
            )
        return BaseModelSource(name, folder, is_demo=False, revision=None)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise BaseModelNotFound(
            f"[finetune.mlx] base_model folder {folder} does not exist: fix the path, or give "
            'a Hugging Face id such as "mlx-community/Qwen2.5-0.5B-Instruct-4bit"'
        )
    return _from_hub(name, revision)


def _from_hub(name: str, revision: str | None) -> BaseModelSource:
    from huggingface_hub import snapshot_download

    try:
        try:
            path = snapshot_download(name, revision=revision, allow_patterns=HUB_FILES, local_files_only=True)
        except Exception:  # not (completely) in the cache: download it once
            path = snapshot_download(name, revision=revision, allow_patterns=HUB_FILES)
    except Exception as exc:
        from huggingface_hub.constants import HF_HUB_CACHE

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BaseModelNotFound(
            f"cannot load base model {name!r}: it is not in the Hugging Face cache ({HF_HUB_CACHE}) "
            f"and could not be downloaded ({reason}). Connect to the internet for the first run, or "
            f"download it where you can (`hf download {name}`), copy the folder here and set "
            "[finetune.mlx] base_model to that folder"
        ) from None
    folder = Path(path)
    # A snapshot folder is named after its commit.
    return BaseModelSource(name, folder, is_demo=False, revision=folder.name)


def folder_files(name: str, base_dir: Path) -> list[Path]:
    """The files of a base model given as a folder (none for a Hub id or the demo model), so
    that the train stage reruns when they change."""
    folder = _folder(name, base_dir)
    if name == DEMO_BASE_MODEL or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _folder(name: str, base_dir: Path) -> Path:
    return (base_dir / Path(name).expanduser()).resolve()


def load(source: BaseModelSource) -> tuple[Any, Any]:
    """The base model (mlx-lm's module, on MLX's default device) and its tokenizer
    (mlx-lm's TokenizerWrapper; `.tokenizer` is the Hugging Face one)."""
    from mlx_lm.utils import load_model, load_tokenizer

    try:
        model, config = load_model(source.folder)
        tokenizer = load_tokenizer(source.folder, eos_token_ids=config.get("eos_token_id"))
    except (OSError, ValueError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"cannot load base model {source.name!r} with mlx-lm ({reason}): it must be a causal "
            "language model of an architecture mlx-lm implements, with safetensors weights and "
            "its tokenizer (an mlx-community model, or an original Hugging Face one)"
        ) from None
    hf = tokenizer._tokenizer
    if hf.chat_template is None:
        raise TrainingError(
            f"base model {source.name!r} has no chat template: choose an instruct (chat) model, "
            'such as "mlx-community/Qwen2.5-0.5B-Instruct-4bit"'
        )
    if not hf.is_fast:
        raise TrainingError(
            f"base model {source.name!r} has no fast (tokenizer.json) tokenizer, which finding "
            "the replies' tokens needs: choose a model folder that has tokenizer.json"
        )
    return model, tokenizer


def is_quantized(model: Any) -> bool:
    """True when some of the model's layers hold quantized weights (training is then QLoRA)."""
    import mlx.nn as nn

    return any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())
