"""The MLX backend: LoRA fine-tuning with Apple's MLX and mlx-lm, on this machine.

Made for Apple silicon, where MLX trains on the GPU in unified memory and, when the base
model is quantized (an `mlx-community/...-4bit` model), trains a LoRA adapter on the 4-bit
weights (QLoRA), which PyTorch cannot do on a Mac. On Linux the `mlx-lm[cpu]` wheels train
on the CPU: that is how CI and developers test this backend. Nothing is sent anywhere.

Training has the torch backend's semantics, on the same examples (`backends.examples`: the
loss on the AI side's replies only) and the same loop rules (`backends.training`).

- `demo_model`: the tiny random model the package builds itself, in mlx-lm's layout.
- `base_model`: finding and loading the base model and its tokenizer.
- `checkpoints`: the resumable state of a run.
- `trainer`: the training loop, its events, Ctrl-C.
- `chat`: the trained (or base) model answering and scoring (`ChatModel`).
- `backend`: `MlxBackend`, the `Backend` the rest of the package sees.

mlx and mlx-lm come with the `mlx` extra; every module here imports them lazily, so the rest
of the package (and this module) work without them, and choosing this backend without them
says what to install (`require`).
"""

from __future__ import annotations

import importlib
import os

from imessage_finetune.errors import TrainingError

REQUIRED = ("mlx", "mlx_lm")
INSTALL_HINT = "pip install 'imessage-finetune[mlx]' (mlx-lm on a Mac; on Linux its CPU build, mlx-lm[cpu])"


class MlxBackendUnavailable(TrainingError):
    """The packages the MLX backend needs are not installed (or not built for this machine)."""


def require() -> None:
    """Raise MlxBackendUnavailable naming what to install, unless mlx and mlx-lm import."""
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name.replace("_", "-"))
    try:
        importlib.import_module("mlx.core")
    except ImportError:  # `mlx` alone has no backend: mlx-metal on a Mac, mlx-cpu on Linux
        if "mlx" not in missing:
            missing.append("mlx's backend for this machine")
    if missing:
        raise MlxBackendUnavailable(
            f"the mlx backend needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f'not installed: {INSTALL_HINT}; or set [finetune] backend = "local"'
        )


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and advice: the pipeline reports progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|mlx_lm)\.")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def resolve_device(setting: str) -> str:
    """The device to train and generate on, made MLX's default: `auto` is the GPU (Apple
    silicon's, through Metal) when MLX has one here, else the CPU."""
    import mlx.core as mx

    gpu = mx.is_available(mx.gpu)
    if setting == "gpu" and not gpu:
        raise TrainingError(
            '[finetune.mlx] device = "gpu" but MLX has no GPU on this machine (MLX\'s GPU is '
            'Apple silicon\'s; this build is CPU-only): set device = "auto" (or "cpu")'
        )
    device = "gpu" if setting == "gpu" or (setting == "auto" and gpu) else "cpu"
    mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
    if device == "cpu":
        # On the CPU, mx.compile builds C++ kernels with the system compiler the first time
        # (cached in $TMPDIR/mlx): minutes on a small machine, for no measured gain there
        # (bench/bench_mlx_training.py), and a compiler the machine may not have. The results
        # are the same either way.
        mx.disable_compile()
    return device
