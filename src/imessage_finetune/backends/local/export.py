"""The tuned model as a plain Hugging Face folder: the adapter merged into the base weights.

Runtimes that load such a folder (transformers, Ollama's importer, llama.cpp's converter)
need nothing of this package, and a merged model avoids the difference in how trainers and
runtimes scale an adapter. The merge is done in float32 on the CPU (W + (alpha/r)·B·A, by
peft), then the weights are stored in the base model's own precision (bfloat16 for most
Hub models: one rounding, the one the base weights already had).

`generation_config.json` carries `chat`'s sampling settings (temperature, top_p, the base
model's top_k and repetition penalty, max_new_tokens), so that plain
`model.generate(**inputs)` after `torch.manual_seed(seed)` answers as `chat` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_dir
from imessage_finetune.backends.local import base_model, quiet_libraries, require
from imessage_finetune.backends.local.chat import TOP_P
from imessage_finetune.config import LocalConfig
from imessage_finetune.errors import TrainingError

TRANSFORMERS_DEFAULT_TOP_K = 50  # what generate() uses when a model's config sets none


def export_merged(
    model_json: Mapping[str, Any], artifacts_dir: Path, base_dir: Path, settings: LocalConfig, folder: Path
) -> Path:
    """Write the merged model, its tokenizer and generation config into `folder` (replaced
    whole, never half-written; 0700, files 0600)."""
    require()
    quiet_libraries()
    import torch
    from peft import PeftModel

    source = base_model.locate(model_json["base_model"], base_dir, artifacts_dir)
    model, tokenizer, _ = base_model.load(source, "cpu", model_json.get("base_model_revision"))
    stored_dtype = _stored_dtype(model.config)
    adapter = artifacts_dir / model_json["adapter_path"]
    if not all((adapter / name).is_file() for name in artifacts.ADAPTER_FILES):
        raise TrainingError(
            f"the trained adapter is missing from {adapter}: run `imessage-finetune run train` to train it again"
        )
    with torch.no_grad():
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged = merged.to(stored_dtype)
    _set_generation(merged.generation_config, settings)
    with atomic_dir(folder) as staging:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _strip_local_paths(staging)
        make_private(staging)
    return folder


def _stored_dtype(config: Any) -> Any:
    """The precision the base model's weights were saved in (float32 when unknown)."""
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _set_generation(generation: Any, settings: LocalConfig) -> None:
    sampling = settings.temperature > 0
    generation.do_sample = sampling
    generation.max_new_tokens = settings.max_new_tokens
    if sampling:
        generation.temperature = settings.temperature
        generation.top_p = TOP_P
        # What generate() applies anyway when the config is silent: written down, so that
        # other runtimes (the Modelfile) sample the same way.
        if generation.top_k is None:
            generation.top_k = TRANSFORMERS_DEFAULT_TOP_K
    else:
        generation.temperature = generation.top_p = generation.top_k = None
    if generation.repetition_penalty is None:
        generation.repetition_penalty = 1.0  # other runtimes have their own default (Ollama: 1.1)


def _strip_local_paths(folder: Path) -> None:
    """No path of this machine in the exported files (they may be shared as they are)."""
    for name in ("config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            document = json.loads(path.read_text(encoding="utf-8"))
            if "_name_or_path" in document or "name_or_path" in document:
                document.pop("_name_or_path", None)
                document.pop("name_or_path", None)
                path.write_text(
                    json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
                )


def make_private(folder: Path) -> None:
    """Folders 0700, files 0600: the export is the user's messages in another form."""
    os.chmod(folder, 0o700)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root) / name, 0o700)
        for name in files:
            os.chmod(Path(root) / name, 0o600)
