"""The way in to the service: the API key (never logged, never written) and the client.

The key comes from OPENAI_API_KEY, else from the file `[finetune] api_key_file` names.
"""

from __future__ import annotations

import os
from pathlib import Path

from imessage_finetune.backends.openai.client import OpenAIClient
from imessage_finetune.config import ConfigLike, FinetuneConfig
from imessage_finetune.errors import ServiceSetupError

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
OPENAI_URL = "https://api.openai.com/v1"


def api_key(finetune: FinetuneConfig, base_dir: Path) -> str:
    """The API key from OPENAI_API_KEY, else from [finetune] api_key_file; never logged."""
    key = os.environ.get(KEY_ENV, "").strip()
    if not key and finetune.api_key_file:
        path = (base_dir / Path(finetune.api_key_file).expanduser()).resolve()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServiceSetupError(
                f"cannot read [finetune] api_key_file {path}: {exc.strerror}; nothing was sent"
            ) from None
    if not key:
        raise ServiceSetupError(
            f"no API key: set {KEY_ENV} (or point [finetune] api_key_file at a file holding it); nothing was sent"
        )
    return key


def connect(config: ConfigLike, *, strict: bool = False) -> OpenAIClient:
    """A client of the configured endpoint, with the key (raises before anything is sent
    when there is none). `strict` checks every reply against the SDK's models, which catches
    a compatible endpoint that answers in another shape (the tests always run this way)."""
    finetune = config.finetune
    return OpenAIClient(
        api_key(finetune, config.base_dir),
        finetune.base_url or None,
        timeout=finetune.request_timeout,
        strict=strict,
    )


def endpoint(finetune: FinetuneConfig) -> str:
    """Where the data goes."""
    return finetune.base_url or os.environ.get(BASE_URL_ENV) or OPENAI_URL
