"""Stage `dataset`: the training file (`artifacts/train.jsonl`), an optional held-out
`validation.jsonl`, the held-out set of the newest conversations (`heldout.jsonl`, for the
`evaluate` stage) and `artifacts/dataset-report.json`.

The held-out set is split off by time first (`evaluation.heldout`: every held-out message is
newer than every training message); the validation split by chat is taken from the rest.

Each merged example becomes one line in OpenAI's chat format (`system` prompt from config,
the other side as `user` with group senders in `name`, the learned voice as `assistant`).
The lines are checked with OpenAI's rule set (`validator.py`) before anything is published,
so the file a fine-tuning service receives is accepted on the first try; the report counts
tokens with the target model's tokenizer and estimates what training will bill.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.config import ConfigView, DatasetConfig, FinetuneConfig
from imessage_finetune.errors import DatasetError
from imessage_finetune.evaluation.heldout import Span, split_by_time
from imessage_finetune.jsonio import dump_compact, dump_json, read_stream, read_trailer
from imessage_finetune.openai_file import ValidationResult, validate_lines
from imessage_finetune.schema_check import validate_document
from imessage_finetune.shaping import in_validation, openai_example, openai_message
from imessage_finetune.sources.chatdb.dates import unix_to_iso
from imessage_finetune.stages.merged import FORMAT as MERGED_FORMAT
from imessage_finetune.stages.stage import Stage, StageContext
from imessage_finetune.tokens import TokenCounter, counter_for, token_limit

SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class DatasetSummary:
    """The report, for the closing summary on the terminal."""

    report: dict[str, Any]


PARTNER_SENTENCE = "You are texting with {partner}."
UNKNOWN_PARTNER = "someone who is not in your contacts"


def partner_prompt(system_prompt: str, partner: str) -> str:
    """The system prompt with the sentence naming who the conversation is with."""
    sentence = PARTNER_SENTENCE.format(partner=partner)
    return f"{system_prompt} {sentence}" if system_prompt else sentence


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def partner_of(example: dict[str, Any]) -> str:
    """Who the learned voice is talking to in an example, by their Contacts names: the other
    side's senders. A handle without a name in Contacts is never spelled out (it would put
    a phone number or an address into every line of the chat)."""
    names: list[str] = []
    for message in example["messages"]:
        if message["type"] == "ai":
            continue
        kwargs = message["data"]["additional_kwargs"]
        name = UNKNOWN_PARTNER if kwargs["sender"] == kwargs["handle"] else kwargs["sender"]
        if name not in names:
            names.append(name)
    if not example["is_group"]:
        return _names(names) if names else UNKNOWN_PARTNER
    group = f'the group "{example["display_name"]}"' if example["display_name"] else "a group"
    return f"{group} with {_names(names)}" if names else group


def openai_line(example: dict[str, Any], system_prompt: str, *, partner: bool = False) -> dict[str, Any]:
    """One merged example as an OpenAI chat fine-tuning line (`partner`: the system prompt
    names who the conversation is with)."""
    return openai_example(
        [
            openai_message(message["type"], message["data"]["content"], name=message["data"]["name"])
            for message in example["messages"]
        ],
        partner_prompt(system_prompt, partner_of(example)) if partner else system_prompt,
    )


def _percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def token_stats(tokens: list[int]) -> dict[str, int] | None:
    """min, median, p95 and max of the tokens per example (None for no examples)."""
    if not tokens:
        return None
    return {
        "min": min(tokens),
        "median": _percentile(tokens, 0.5),
        "p95": _percentile(tokens, 0.95),
        "max": max(tokens),
    }


def _check(result: ValidationResult) -> None:
    if result.ok:
        return
    shown = "\n".join(f"  {p}" for p in result.errors[:SHOWN_PROBLEMS])
    more = len(result.errors) - SHOWN_PROBLEMS
    raise DatasetError(
        f"{result.path} would be refused by OpenAI, so it was not written:\n{shown}"
        + (f"\n  ... and {more} more" if more > 0 else "")
        + "\nadjust [dataset] in your config (e.g. ai_sender, max_tokens, or more chats)"
    )


def write_dataset(
    merged_path: Path,
    out_dir: Path,
    options: DatasetConfig,
    finetune: FinetuneConfig,
    counter: TokenCounter,
) -> DatasetSummary:
    """Write train.jsonl (and validation.jsonl when a share is held out) and the report."""
    header, examples = read_stream(merged_path, "examples")
    if header.get("format") != MERGED_FORMAT:
        raise DatasetError(f"{merged_path} is not a merged.json written by imessage-finetune; rebuild it")
    merged_stats = read_trailer(merged_path, "stats")
    sessions_stats = merged_stats["sessions"]
    rendered: list[tuple[int, dict[str, Any]]] = []
    spans: list[Span] = []
    for example in examples:
        line_object = openai_line(example, options.system_prompt, partner=options.partner_in_prompt)
        rendered.append((example["chat_id"], line_object))
        spans.append(example_span(example))
    by_time = split_by_time(spans, share=options.heldout_share, days=options.heldout_days)
    if spans and not by_time.count("train"):
        raise DatasetError(
            f"dataset.heldout_days = {options.heldout_days:g} holds out the whole history (it spans "
            f"{(max(s.end for s in spans) - min(s.start for s in spans)) / 86_400:.0f} days): lower it, "
            "or use heldout_share instead"
        )
    train_lines: list[str] = []
    validation_lines: list[str] = []
    heldout_lines: list[str] = []
    train_messages = 0
    train_chats: set[int] = set()
    heldout_messages = heldout_replies = 0
    heldout_chats: set[int] = set()
    for (chat_id, line_object), side in zip(rendered, by_time.sides, strict=True):
        line = dump_compact(line_object).decode()
        if side == "heldout":
            heldout_lines.append(line)
            heldout_messages += len(line_object["messages"])
            heldout_replies += sum(m["role"] == "assistant" for m in line_object["messages"])
            heldout_chats.add(chat_id)
            continue
        if side == "boundary":
            continue
        held_out = in_validation(chat_id, options.validation_share, options.split_seed)
        (validation_lines if held_out else train_lines).append(line)
        if not held_out:
            train_messages += len(line_object["messages"])
            train_chats.add(chat_id)

    limit = token_limit(finetune.model)
    train = validate_lines(train_lines, name=artifacts.TRAIN.filename, model=finetune.model, token_limit=limit)
    _check(train)
    validation = None
    if options.validation_share > 0:
        validation = validate_lines(
            validation_lines,
            name=artifacts.VALIDATION.filename,
            model=finetune.model,
            token_limit=limit,
            min_examples=1,
        )
        _check(validation)
        overlap = set(train_lines) & set(validation_lines)
        if overlap:
            raise DatasetError(
                f"{len(overlap)} examples are in both train.jsonl and validation.jsonl; "
                "change dataset.split_seed or dataset.validation_share"
            )

    holding_out = options.heldout_share > 0 or options.heldout_days > 0
    if holding_out:
        _check(
            validate_lines(
                heldout_lines, name=artifacts.HELDOUT.filename, model=finetune.model, token_limit=limit, min_examples=0
            )
        )

    tokens = list(train.tokens_per_example)
    billed = sum(min(limit, t) for t in tokens) * finetune.n_epochs
    price = finetune.price_per_million_tokens.get(finetune.model)
    report = {
        "model": finetune.model,
        "tokenizer": {"encoding": counter.encoding, "exact": counter.exact},
        "token_limit": limit,
        "examples": {
            "train": train.examples,
            "validation": validation.examples if validation else 0,
            "heldout": len(heldout_lines),
        },
        "heldout": {
            "share": options.heldout_share,
            "days": options.heldout_days,
            "cutoff": None if by_time.cutoff is None else unix_to_iso(int(by_time.cutoff)),
            "examples": len(heldout_lines),
            "messages": heldout_messages,
            "replies": heldout_replies,
            "conversations": len(heldout_chats),
            "left_out_at_cutoff": by_time.count("boundary"),
        },
        "conversations": len(train_chats),
        "messages": train_messages,
        "tokens_per_example": token_stats(tokens),
        "tokens_total": sum(tokens),
        "examples_over_limit": sum(1 for t in tokens if t > limit),
        "n_epochs": finetune.n_epochs,
        "billed_tokens": billed,
        "price_per_million_tokens": price,
        "estimated_cost_usd": round(billed / 1e6 * price, 2) if price is not None else None,
        "warnings": dict(sorted(Counter(p.code for p in train.warnings).items())),
        "dropped": {
            "sessions": sessions_stats["excluded"],
            "chats": sessions_stats["chats_excluded"],
            "merged": merged_stats["dropped"],
        },
        "redactions": merged_stats["redactions"],
    }
    validate_document(artifacts.DATASET_REPORT, report)
    _publish(artifacts.TRAIN.path(out_dir), train_lines)
    heldout_path = artifacts.HELDOUT.path(out_dir)
    if holding_out:
        _publish(heldout_path, heldout_lines)
    else:
        heldout_path.unlink(missing_ok=True)
    validation_path = artifacts.VALIDATION.path(out_dir)
    if validation is not None:
        _publish(validation_path, validation_lines)
    else:
        validation_path.unlink(missing_ok=True)  # a stale one from an earlier config must go
    with atomic_write(artifacts.DATASET_REPORT.path(out_dir)) as handle:
        handle.write(dump_json(report))
    return DatasetSummary(report)


def example_span(example: dict[str, Any]) -> Span:
    """The time a merged example covers: its first message to its last."""
    first = example["messages"][0]["data"]["additional_kwargs"]
    last = example["messages"][-1]["data"]["additional_kwargs"]
    return Span(float(first["message_time"]), float(last["last_message_time"]))


def _publish(path: Path, lines: list[str]) -> None:
    with atomic_write(path) as handle:
        for line in lines:
            handle.write(line.encode() + b"\n")


# What shapes the files and the report: the splits (by chat and by time), the system prompt
# (and whether it names the partner), and the target model (tokenizer, token limit), epochs and
# price of the cost estimate.
KEYS = (
    "dataset.validation_share",
    "dataset.split_seed",
    "dataset.heldout_share",
    "dataset.heldout_days",
    "dataset.partner_in_prompt",
    "dataset.system_prompt",
    "finetune.model",
    "finetune.n_epochs",
    "finetune.price_per_million_tokens",
)
# Only for the closing words: whether the cost applies (a backend that sends the data).
SIDE_KEYS = ("finetune.backend",)


def outputs(config: ConfigView) -> list[artifacts.Artifact]:
    """train.jsonl and the report, validation.jsonl when a share is held out, heldout.jsonl
    when the newest conversations are."""
    written = [artifacts.TRAIN, artifacts.DATASET_REPORT]
    if config.dataset.validation_share > 0:
        written.append(artifacts.VALIDATION)
    if config.dataset.heldout_share > 0 or config.dataset.heldout_days > 0:
        written.append(artifacts.HELDOUT)
    return written


def run(ctx: StageContext) -> None:
    """Write train.jsonl (and validation.jsonl) and the report; say what they hold."""
    from imessage_finetune.backends import backend_for

    config = ctx.config
    summary = write_dataset(
        ctx.path(artifacts.MERGED),
        ctx.artifacts_dir,
        config.dataset,
        config.finetune,
        counter_for(config.finetune.model),
    )
    backend = backend_for(config)
    first, *rest = report_lines(summary.report, kept_by=None if backend.sends_data else backend.name)
    ctx.say(first.removeprefix("dataset: "))
    for line in rest:
        ctx.detail(line.strip())
    warnings = summary.report["warnings"]
    if warnings:
        ctx.detail(
            f"warnings: {', '.join(f'{code} {n}' for code, n in warnings.items())} (OpenAI accepts these lines; "
            f"`imessage-finetune validate {ctx.path(artifacts.TRAIN)}` says which)"
        )


def heldout_lines(heldout: dict[str, Any]) -> list[str]:
    """The held-out set in one line (none when nothing is held out)."""
    if heldout["cutoff"] is None:
        return []
    return [
        f"  held out (newest, from {heldout['cutoff'][:10]}): {heldout['examples']} examples with "
        f"{heldout['replies']} replies from {heldout['conversations']} chats"
        + (
            f"; {heldout['left_out_at_cutoff']} spanning the cutoff are in neither set"
            if heldout["left_out_at_cutoff"]
            else ""
        )
    ]


def report_lines(report: dict[str, Any], *, kept_by: str | None = None) -> list[str]:
    """The dataset report as a few lines for the terminal (`kept_by`: the name of a backend
    that trains without sending the data anywhere, when it is one)."""
    tokens = report["tokens_per_example"] or {"min": 0, "median": 0, "p95": 0, "max": 0}
    cost = report["estimated_cost_usd"]
    price = f"${cost:.2f}" if cost is not None else "unknown (no price for this model in config)"
    tokenizer = report["tokenizer"]
    label = tokenizer["encoding"] if tokenizer["exact"] else "ESTIMATE (tokenizer unavailable)"
    dropped = report["dropped"]
    left_out = ", ".join(f"{k} {v}" for part in ("sessions", "chats", "merged") for k, v in dropped[part].items())
    return [
        f"dataset: {report['examples']['train']} training examples"
        + (f" + {report['examples']['validation']} validation" if report["examples"]["validation"] else "")
        + f", {report['messages']} messages, {report['tokens_total']} tokens ({label})",
        *heldout_lines(report["heldout"]),
        f"  tokens per example: min {tokens['min']}, median {tokens['median']}, p95 {tokens['p95']}, "
        f"max {tokens['max']}; over the {report['token_limit']} limit: {report['examples_over_limit']}",
        f"  {report['model']}, {report['n_epochs']} epochs: {report['billed_tokens']} billed tokens, "
        f"estimated cost {price}"
        + ("" if kept_by is None else f" if sent to OpenAI (the {kept_by} backend sends nothing)"),
        f"  left out: {left_out or 'nothing'}",
    ]


STAGE = Stage(
    name="dataset",
    doc="Write train.jsonl (checked against OpenAI's rules) and dataset-report.json.",
    run=run,
    reads=(artifacts.MERGED,),
    writes=outputs,
    keys=KEYS,
    side_keys=SIDE_KEYS,
)
