"""Training backends, and the one place that decides which one a configuration gets.

`backend_for(config)` returns the configured `Backend` (`interface.py`): `local` trains a
LoRA adapter on this machine with PyTorch (`backends/local/`), `mlx` with Apple's MLX
(`backends/mlx/`), `openai` sends the data to OpenAI or a compatible service
(`backends/openai/`). Stages, the CLI and the LangChain model ask it, never
`[finetune] backend` itself. A backend's module is imported only when it is chosen, so using
one never needs another's packages (PyTorch, the openai SDK).

Adding a backend: a class implementing `Backend` and one line in `BACKENDS`.
"""

from __future__ import annotations

import importlib

from imessage_finetune.backends.interface import Backend
from imessage_finetune.config import ConfigLike, RunOptions
from imessage_finetune.errors import ConfigError

# name -> "module:class"; the name is [finetune] backend's value and model.json's `backend`.
BACKENDS = {
    "local": "imessage_finetune.backends.local.backend:LocalBackend",
    "mlx": "imessage_finetune.backends.mlx.backend:MlxBackend",
    "openai": "imessage_finetune.backends.openai.backend:OpenAIBackend",
}


def backend_module(config: ConfigLike) -> str:
    """The name of the module that holds the configured backend (its code is part of what
    the train stage's result depends on)."""
    return BACKENDS[config.finetune.backend].split(":")[0]


def backend_for(config: ConfigLike, name: str | None = None, *, options: RunOptions | None = None) -> Backend:
    """The backend `[finetune] backend` names (or `name`: model.json's, for a model trained
    with another backend than the one configured now)."""
    chosen = name if name is not None else config.finetune.backend
    if chosen not in BACKENDS:
        raise ConfigError(f"unknown backend {chosen!r}; known backends: {', '.join(sorted(BACKENDS))}")
    module, cls = BACKENDS[chosen].split(":")
    backend: Backend = getattr(importlib.import_module(module), cls)(config, options or RunOptions())
    return backend
