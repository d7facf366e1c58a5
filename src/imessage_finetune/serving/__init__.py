"""Using the trained model where people chat: an OpenAI-compatible server and an export.

- `openai_api`: OpenAI's Chat Completions request checked and turned into our messages and
  `GenerationSettings`; replies, stream chunks and errors in OpenAI's shapes.
- `server`: the ASGI application (Starlette, sse-starlette) and how uvicorn runs it: one model,
  one request at a time in arrival order, a bounded queue, bearer-token checks.
- `modelfile`: the model's chat template as an Ollama TEMPLATE, checked against the
  tokenizer's own rendering, and the Modelfile around it.
- `export`: the export folder (merged weights from the backend, the Modelfile), private to
  the user and never inside a git work tree unless forced.

The ASGI stack comes with the `serve` extra (and the `local` extra, which includes it);
everything is imported lazily so the rest of the package works without it.
"""

from __future__ import annotations

import importlib

from imessage_finetune.errors import FinetuneError

REQUIRED = ("starlette", "uvicorn", "sse_starlette")


class ServingUnavailable(FinetuneError):
    """The packages `serve` needs are not installed."""


def require() -> None:
    """Raise ServingUnavailable naming what to install, unless starlette, uvicorn and
    sse-starlette are all there."""
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name.replace("_", "-"))
    if missing:
        raise ServingUnavailable(
            f"`serve` needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed: pip install 'imessage-finetune[serve]'"
        )
