"""Sending the training files to the fine-tuning service, and the receipt
(`artifacts/upload.json`) that records what is there (the upload stage runs this).

Nothing leaves the machine before the checks here: an API key exists (`keys.connect`), the
training file passes OpenAI's rules, and the estimated cost is within `max_cost`. Files are
named by their content hash, so an earlier upload of the same content is found and reused, never sent (or
paid for) twice; the receipt is written as soon as each file id is known.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.backends.interface import Disclosure
from imessage_finetune.backends.openai.keys import OPENAI_URL, endpoint
from imessage_finetune.backends.openai.service import FineTuneService
from imessage_finetune.config import FinetuneConfig
from imessage_finetune.digests import file_digest
from imessage_finetune.errors import ServiceSetupError
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.openai_file import validate_file
from imessage_finetune.schema_check import validate_document
from imessage_finetune.tokens import token_limit

# OpenAI's announced calendar (notes/openai-finetuning.md §1).
NO_NEW_JOBS = dt.date(2027, 1, 6)
RETIREMENT = dt.date(2027, 1, 14)
RETIRING_MODELS = ("gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14")


def calendar_notice(finetune: FinetuneConfig, today: dt.date) -> list[str]:
    """OpenAI's shutdown dates, when the data goes to OpenAI itself."""
    if endpoint(finetune) != OPENAI_URL:
        return []
    lines = []
    if today < NO_NEW_JOBS:
        lines.append(
            f"OpenAI stops all new fine-tuning jobs on {NO_NEW_JOBS} ({(NO_NEW_JOBS - today).days} "
            "days from now); new organisations are already refused."
        )
    else:
        lines.append(
            f"OpenAI stopped new fine-tuning jobs on {NO_NEW_JOBS}: use an OpenAI-compatible "
            "endpoint ([finetune] base_url) or train locally."
        )
    if finetune.model in RETIRING_MODELS:
        lines.append(f"{finetune.model} and every fine-tune of it are retired on {RETIREMENT}.")
    return lines


def disclose(out_dir: Path, finetune: FinetuneConfig) -> Disclosure:
    """What the upload will send, from the dataset report."""
    report = load_json(artifacts.DATASET_REPORT.path(out_dir).read_bytes())
    files = [artifacts.TRAIN.path(out_dir)]
    if report["examples"]["validation"]:
        files.append(artifacts.VALIDATION.path(out_dir))
    return Disclosure(
        endpoint=endpoint(finetune),
        conversations=report["conversations"],
        examples=report["examples"]["train"],
        validation_examples=report["examples"]["validation"],
        tokens=report["tokens_total"],
        estimated_cost_usd=report["estimated_cost_usd"],
        files=tuple(p.name for p in files),
    )


def check_before_sending(out_dir: Path, finetune: FinetuneConfig) -> Disclosure:
    """Validate the files again and enforce max_cost; raise before anything is sent."""
    disclosure = disclose(out_dir, finetune)
    for name in disclosure.files:
        result = validate_file(
            out_dir / name,
            model=finetune.model,
            token_limit=token_limit(finetune.model),
            min_examples=10 if name == artifacts.TRAIN.filename else 1,
        )
        if not result.ok:
            raise ServiceSetupError(
                f"{name} does not pass OpenAI's rules ({len(result.errors)} errors, first: "
                f"{result.errors[0]}); run `imessage-finetune validate {out_dir / name}`; nothing was sent"
            )
    cost = disclosure.estimated_cost_usd
    if finetune.max_cost and cost is None:
        raise ServiceSetupError(
            f"no price for {finetune.model} in [finetune.price_per_million_tokens], so the cost "
            "cannot be checked against max_cost; add its price, or set max_cost = 0 to accept "
            "any cost; nothing was sent"
        )
    if finetune.max_cost and cost is not None and cost > finetune.max_cost:
        raise ServiceSetupError(
            f"estimated cost ${cost:.2f} is above [finetune] max_cost ${finetune.max_cost:.2f}; "
            "raise max_cost, lower n_epochs, or train on fewer conversations; nothing was sent"
        )
    return disclosure


def remote_name(kind: str, digest: str) -> str:
    """The name a file is uploaded under: its kind and content hash, so reuploads are found."""
    return f"{kind}-{digest[:12]}.jsonl"


def upload_files(backend: FineTuneService, out_dir: Path, finetune: FinetuneConfig) -> tuple[dict[str, Any], list[str]]:
    """Find or upload the training (and validation) file; publish the receipt as ids arrive.

    Returns the receipt and the names of the files found already uploaded (not sent again).
    """
    reused = []
    target = artifacts.UPLOAD.path(out_dir)
    receipt: dict[str, Any] = {"backend": finetune.backend, "endpoint": endpoint(finetune), "files": {}}
    disclosure = disclose(out_dir, finetune)
    for name in disclosure.files:
        path = out_dir / name
        kind = name.removesuffix(".jsonl")
        digest = file_digest(path)
        remote, uploaded = backend.find_or_upload(path, remote_name(kind, digest))
        receipt["files"][kind] = {
            "id": remote.id,
            "filename": remote.filename,
            "bytes": remote.bytes,
            "sha256": digest,
        }
        if not uploaded:
            reused.append(name)
        validate_document(artifacts.UPLOAD, receipt)
        with atomic_write(target) as handle:
            handle.write(dump_json(receipt))
    receipt["dataset_sha256"] = hashlib.sha256(
        "".join(receipt["files"][k]["sha256"] for k in sorted(receipt["files"])).encode()
    ).hexdigest()
    validate_document(artifacts.UPLOAD, receipt)
    with atomic_write(target) as handle:
        handle.write(dump_json(receipt))
    return receipt, reused
