"""The local backend: LoRA fine-tuning of an open-weights model on this machine.

Nothing is sent anywhere. PyTorch, transformers and peft come with the `local` extra; every
module here imports them lazily, so the rest of the package (and this module) work without
them, and choosing this backend without them says what to install (`require`).

- `backend`: the `Backend` (`backend_for` gives it for [finetune] backend = "local").
- `training`: train.jsonl to a published adapter and model.json.
- `base_model`: finding and loading the base model and its tokenizer, the demo model.
- `tiny_model`: the tiny random model the package builds itself for demonstrations.
- `checkpoints`: the resumable state of a run.
- `trainer`: the training loop, its events, Ctrl-C (on examples from `backends.examples`,
  shared with the MLX backend).
- `chat`: the trained model (or its base) answering, streamed, and scoring conversations.
"""

from __future__ import annotations

import importlib
import os

from imessage_finetune.errors import TrainingError

REQUIRED = ("torch", "transformers", "peft", "safetensors")
INSTALL_HINT = (
    "in a clone of the project run `python3 install.py` (it chooses the PyTorch build for this "
    "machine); elsewhere pip install 'imessage-finetune[local]' (on a machine without an NVIDIA "
    "GPU, install the CPU build of PyTorch first, about 190 MB to download against 3 GB: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
)


class LocalBackendUnavailable(TrainingError):
    """The packages the local backend needs are not installed."""


def require() -> None:
    """Raise LocalBackendUnavailable naming what to install, unless every package is there."""
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise LocalBackendUnavailable(
            f"the local backend needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f'not installed: {INSTALL_HINT}; or set [finetune] backend = "openai"'
        )


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and advice: the pipeline reports progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    import huggingface_hub
    import transformers

    # Deprecation notices meant for the libraries' own callers, not for our users.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    huggingface_hub.utils.logging.set_verbosity_error()

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def resolve_device(setting: str) -> str:
    """The device to train on: `auto` picks CUDA, then Apple MPS, then the CPU."""
    import torch

    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if setting == "auto":
        return next(name for name, ok in available.items() if ok)
    if not available[setting]:
        raise TrainingError(
            f"[finetune.local] device = {setting!r} but this machine has no {setting.upper()} device "
            'PyTorch can use; set device = "auto" (or "cpu")'
        )
    return setting
