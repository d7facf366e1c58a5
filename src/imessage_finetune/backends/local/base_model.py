"""Finding and loading the base model: a Hugging Face id, a folder, or the demo model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.config import DEMO_BASE_MODEL
from imessage_finetune.errors import TrainingError


class BaseModelNotFound(TrainingError):
    """The base model is neither a folder here nor in (or downloadable to) the Hugging Face cache."""


@dataclass(frozen=True)
class BaseModelSource:
    """Where the base model comes from: `name` as configured, `location` for from_pretrained."""

    name: str
    location: str
    is_demo: bool
    is_folder: bool


def locate(name: str, base_dir: Path, artifacts_dir: Path) -> BaseModelSource:
    """Where `[finetune.local] base_model` points; the demo model is built if it is missing.

    A name that is a folder (relative to the config file) is used as is; one that looks
    like a path but is not a folder is an error; anything else is a Hugging Face id.
    """
    if name == DEMO_BASE_MODEL:
        from imessage_finetune.backends.local.tiny_model import build_demo_model, is_current

        folder = artifacts.DEMO_BASE_MODEL.path(artifacts_dir)
        if not is_current(folder):
            build_demo_model(folder)
        return BaseModelSource(name, str(folder), is_demo=True, is_folder=True)
    folder = _folder(name, base_dir)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BaseModelNotFound(
                f"[finetune.local] base_model {name!r} is a folder without config.json: point it at "
                "a folder saved by transformers (save_pretrained) or a Hugging Face snapshot"
            )
        return BaseModelSource(name, str(folder), is_demo=False, is_folder=True)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise BaseModelNotFound(
            f"[finetune.local] base_model folder {folder} does not exist: fix the path, or give "
            'a Hugging Face id such as "Qwen/Qwen2.5-0.5B-Instruct"'
        )
    return BaseModelSource(name, name, is_demo=False, is_folder=False)


def folder_files(name: str, base_dir: Path) -> list[Path]:
    """The files of a base model given as a folder (none for a Hub id or the demo model), so
    that the train stage reruns when they change."""
    folder = _folder(name, base_dir)
    if name == DEMO_BASE_MODEL or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _folder(name: str, base_dir: Path) -> Path:
    return (base_dir / Path(name).expanduser()).resolve()


def load(source: BaseModelSource, device: str, revision: str | None = None) -> tuple[Any, Any, str | None]:
    """The base model on `device`, its tokenizer, and the Hub revision (commit) if known.

    A Hub model already in the cache is used as it is there, without asking the Hub again;
    it is downloaded only when missing. `revision` pins the commit (for `chat`, the one the
    adapter was trained on).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Half precision is for GPUs that train in bfloat16; float16 without loss scaling
    # loses small gradients, so other devices train in float32.
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32

    def from_pretrained(local_only: bool) -> tuple[Any, Any]:
        options: dict[str, Any] = {"revision": revision, "local_files_only": local_only}
        return (
            AutoTokenizer.from_pretrained(source.location, **options),
            AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **options),
        )

    try:
        try:
            tokenizer, model = from_pretrained(local_only=True)
        except OSError:
            if source.is_folder:
                raise
            tokenizer, model = from_pretrained(local_only=False)
    except (OSError, ValueError) as exc:
        raise _cannot_load(source, exc) from None
    if tokenizer.chat_template is None:
        raise TrainingError(
            f"base model {source.name!r} has no chat template: choose an instruct (chat) model, "
            'such as "Qwen/Qwen2.5-0.5B-Instruct"'
        )
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise TrainingError(f"base model {source.name!r} has a tokenizer with neither a padding nor an end token")
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer, getattr(model.config, "_commit_hash", None)


def _cannot_load(source: BaseModelSource, exc: Exception) -> TrainingError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if source.is_folder or isinstance(exc, ValueError):
        return TrainingError(
            f"cannot load base model {source.name!r} ({reason}): it must be a causal language "
            "model with its tokenizer, as saved by transformers' save_pretrained, of an "
            "architecture this version of transformers supports"
        )
    from huggingface_hub.constants import HF_HUB_CACHE

    return BaseModelNotFound(
        f"cannot load base model {source.name!r}: it is not in the Hugging Face cache "
        f"({HF_HUB_CACHE}) and could not be downloaded ({reason}). Connect to the internet for "
        f"the first run, or download it where you can (`hf download {source.name}`), copy the "
        "folder here and set [finetune.local] base_model to that folder"
    )
