"""Finding and loading the base model: a Hugging Face id, a folder, or the demo model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.config import DEMO_BASE_MODEL
from imessage_finetune.errors import FineTuneError


class BaseModelNotFound(FineTuneError):
    """The base model is neither a folder here nor in (or downloadable to) the Hugging Face cache."""


@dataclass(frozen=True)
class BaseModelSource:
    """Where the base model comes from: `name` as configured, `location` for from_pretrained."""

    name: str
    location: str
    is_demo: bool


def locate(name: str, base_dir: Path, artifacts_dir: Path) -> BaseModelSource:
    """Where `[finetune.local] base_model` points; the demo model is built if it is missing.

    A name that is a folder (relative to the config file) is used as is; one that looks
    like a path but is not a folder is an error; anything else is a Hugging Face id.
    """
    if name == DEMO_BASE_MODEL:
        folder = artifacts.DEMO_BASE_MODEL.path(artifacts_dir)
        if not (folder / "config.json").is_file():
            from .tiny_model import build_demo_model

            build_demo_model(folder)
        return BaseModelSource(name, str(folder), is_demo=True)
    folder = (base_dir / Path(name).expanduser()).resolve()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise BaseModelNotFound(
                f"[finetune.local] base_model {name!r} is a folder without config.json: point it at "
                "a folder saved by transformers (save_pretrained) or a Hugging Face snapshot"
            )
        return BaseModelSource(name, str(folder), is_demo=False)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise BaseModelNotFound(
            f"[finetune.local] base_model folder {folder} does not exist: fix the path, or give "
            'a Hugging Face id such as "Qwen/Qwen2.5-0.5B-Instruct"'
        )
    return BaseModelSource(name, name, is_demo=False)


def load(source: BaseModelSource, device: str) -> tuple[Any, Any, str | None]:
    """The base model on `device`, its tokenizer, and the Hub revision (commit) if known."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise _not_found(source, exc) from None
    if tokenizer.chat_template is None:
        raise FineTuneError(
            f"base model {source.name!r} has no chat template: choose an instruct (chat) model, "
            'such as "Qwen/Qwen2.5-0.5B-Instruct"'
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    revision = getattr(model.config, "_commit_hash", None)
    return model.to(device), tokenizer, revision


def _not_found(source: BaseModelSource, exc: Exception) -> BaseModelNotFound:
    from huggingface_hub.constants import HF_HUB_CACHE

    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BaseModelNotFound(
        f"cannot load base model {source.name!r}: it is not in the Hugging Face cache "
        f"({HF_HUB_CACHE}) and could not be downloaded ({reason}). Connect to the internet for "
        f"the first run, or download it where you can (`hf download {source.name}`), copy the "
        "folder here and set [finetune.local] base_model to that folder"
    )
