"""`imessage-finetune export`: a folder Ollama and other runtimes load without this package.

The backend writes the tuned model as a Hugging Face folder (adapter merged into the base
weights, safetensors, tokenizer, generation config: `Backend.export`); this module adds the
Ollama `Modelfile` (see `modelfile`), makes the folder private to the user, and publishes it
whole. The export is the user's messages in another form, so it is never written into a git
work tree where it could be committed (unless the folder is ignored there, or forced), and
never over a folder that is not an earlier export.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune.atomic import atomic_dir
from imessage_finetune.errors import FinetuneError
from imessage_finetune.serving.modelfile import infer_turn_format, modelfile, stop_tokens

MODELFILE = "Modelfile"
MARKER = "exported by imessage-finetune"


class ExportError(FinetuneError):
    """The export folder cannot be written where asked."""


@dataclass(frozen=True)
class Exported:
    """What `export` wrote."""

    folder: Path
    weights_bytes: int
    stops: list[str]


def check_destination(folder: Path, force: bool) -> None:
    """Refuse a folder inside a git work tree (unless ignored there, or `force`), and an
    existing folder that is not an earlier export (it would be replaced whole)."""
    folder = folder.expanduser().resolve()
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not is_export(folder))):
        raise ExportError(
            f"{folder} exists and is not an earlier export, which would be replaced whole: choose a new folder"
        )
    if force:
        return
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    work_tree = next((p for p in (existing, *existing.parents) if (p / ".git").exists()), None)
    if work_tree is None:
        return
    if shutil.which("git") is not None:
        ignored = subprocess.run(
            ["git", "-C", str(existing), "check-ignore", "-q", str(folder)],
            capture_output=True,
            check=False,
        )
        if ignored.returncode == 0:
            return
    raise ExportError(
        f"{folder} is inside the git work tree {work_tree} and not ignored there: the export holds what "
        "the model learned from your messages and could be committed. Choose a folder outside it, add "
        "the folder to .gitignore, or pass --force"
    )


def is_export(folder: Path) -> bool:
    """True for a folder an earlier `export` wrote (its Modelfile says so)."""
    path = folder / MODELFILE
    try:
        return path.is_file() and MARKER in path.read_text(encoding="utf-8").split("\n", 2)[0]
    except (OSError, UnicodeDecodeError):
        return False


def export(
    folder: Path,
    write_model: Callable[[Path], Any],
    *,
    model_id: str,
    system_prompt: str,
    force: bool = False,
) -> Exported:
    """Write the export into `folder` (replaced whole once complete): `write_model(path)`
    writes the merged Hugging Face folder (the backend's `export`), then the Modelfile is
    derived from that folder's tokenizer and generation config."""
    from transformers import AutoTokenizer

    check_destination(folder, force)
    folder = folder.expanduser().resolve()
    with atomic_dir(folder) as staging:
        write_model(staging)
        tokenizer = AutoTokenizer.from_pretrained(str(staging))
        generation = _json(staging / "generation_config.json")
        fmt = infer_turn_format(tokenizer)
        stops = stop_tokens(tokenizer, generation, fmt)
        text = modelfile(fmt, stops, system_prompt, generation, model_id)
        (staging / MODELFILE).write_text(text, encoding="utf-8")
        os.chmod(staging, 0o700)
        for path in staging.rglob("*"):
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return Exported(folder, weights, stops)


def _json(path: Path) -> Mapping[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
