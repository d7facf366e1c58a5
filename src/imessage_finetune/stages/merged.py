"""Stage `merged`: conversations shaped for training (`artifacts/merged.json`).

From sessions.json: each chat is cut where nobody wrote for `idle_gap_hours`, runs of
messages from one sender are merged, the chosen voice (`ai_sender`) becomes the AI side and
everyone else the human side, optional redaction is applied, and sessions longer than the
token budget are cut into overlapping windows that each end on an AI turn. Sessions with no
AI turn are dropped and counted. All of it is linear in the number of messages and works on
plain dicts: building LangChain message objects for 300,000 messages would cost more than
the reference chain it replaces. The LangChain-object versions of the same steps are in
`chat_utils` (and share `split_on_idle_gap`, `window` and `redact` with this stage).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.config import DatasetConfig
from imessage_finetune.errors import DatasetError
from imessage_finetune.jsonio import StreamWriter, read_stream, read_trailer
from imessage_finetune.langchain.chat_utils import redact, split_on_idle_gap, window
from imessage_finetune.openai_file import SPECIAL_TOKEN_RE
from imessage_finetune.schema_check import validate_document
from imessage_finetune.sources.chatdb.dates import unix_to_iso
from imessage_finetune.stages.sessions import FORMAT as SESSIONS_FORMAT
from imessage_finetune.stages.stage import Stage, StageContext, counts
from imessage_finetune.tokens import TokenCounter, counter_for

FORMAT = "imessage-finetune/merged"
VERSION = 1
OWNER = "me"
# OpenAI accepts only these characters in a message's `name`.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(slots=True)
class Turn:
    """One merged turn; `additional_kwargs` as in LangChain so `chat_utils` can work on it."""

    content: str
    is_ai: bool
    additional_kwargs: dict[str, Any]
    name: str | None = None
    tokens: int = 0


@dataclass
class MergedStats:
    """What the stage produced and what it dropped, and why."""

    sessions: dict[str, Any] = field(default_factory=dict)
    chats_in: int = 0
    messages_in: int = 0
    ai_messages: int = 0
    examples: int = 0
    turns: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)


def openai_name(sender: str) -> str:
    """A sender's name as OpenAI's `name` field accepts it (letters, digits, _ and -).

    Accents are dropped (José -> Jose); a name with no Latin letters left (张伟) gets a stable
    label derived from it, so two such speakers in one group stay apart.
    """
    ascii_only = "".join(c for c in unicodedata.normalize("NFKD", sender) if not unicodedata.combining(c))
    name = _NAME_UNSAFE.sub("_", ascii_only).strip("_")[:64]
    if len(name) * 2 < len(sender.strip()):
        name = f"{name[:40]}_{hashlib.sha256(sender.encode()).hexdigest()[:8]}".lstrip("_")
    return name


def ai_matcher(ai_sender: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate on a message's kwargs: is it the voice being learned?

    "me" is the owner, by `is_from_me`; any other value is a sender name or handle, compared
    without case (the owner's configured name works too).
    """
    if ai_sender.casefold() == OWNER:
        return lambda kwargs: bool(kwargs["is_from_me"])
    wanted = ai_sender.casefold()
    return lambda kwargs: kwargs["sender"].casefold() == wanted or (kwargs["handle"] or "").casefold() == wanted


def _merge_runs(messages: list[Turn], separator: str) -> list[Turn]:
    """Consecutive messages of one sender become one turn (texts joined once: linear)."""
    turns: list[Turn] = []
    start = 0
    for end in range(1, len(messages) + 1):
        first = messages[start].additional_kwargs
        if end < len(messages):
            nxt = messages[end].additional_kwargs
            if (nxt["is_from_me"], nxt["sender"]) == (first["is_from_me"], first["sender"]):
                continue
        run = messages[start:end]
        kwargs = {
            "sender": first["sender"],
            "is_from_me": first["is_from_me"],
            "handle": first["handle"],
            "message_time": first["message_time"],
            "message_time_iso": first["message_time_iso"],
            "last_message_time": run[-1].additional_kwargs["message_time"],
            "guids": [m.additional_kwargs["guid"] for m in run],
        }
        turns.append(Turn(separator.join(m.content for m in run), messages[start].is_ai, kwargs))
        start = end
    return turns


def shape_session(
    session: dict[str, Any],
    options: DatasetConfig,
    is_ai: Any,
    counter: TokenCounter,
    stats: MergedStats,
) -> Iterator[list[Turn]]:
    """The training windows of one chat."""
    gap_seconds = int(options.idle_gap_hours * 3600)
    group = session["is_group"]
    # Counted as the validator counts the final line, so no example exceeds max_tokens there.
    priming = counter.count_example([])
    system_tokens = (
        counter.count_example([{"role": "system", "content": options.system_prompt}]) - priming
        if options.system_prompt
        else 0
    )
    budget = options.max_tokens - priming - system_tokens
    if budget <= 0:
        raise DatasetError(
            f"dataset.max_tokens ({options.max_tokens}) leaves no room after the system prompt "
            f"({system_tokens} tokens); raise it or shorten dataset.system_prompt"
        )
    redacting = any((options.redact_phones, options.redact_emails, options.redact_codes, options.redact_urls))
    # Split before merging, so the idle gap is measured between messages, not merged turns.
    messages = [
        Turn(m["data"]["content"], is_ai(m["data"]["additional_kwargs"]), m["data"]["additional_kwargs"])
        for m in session["messages"]
    ]
    labels: dict[str, str] = {}
    for part in split_on_idle_gap(messages, gap_seconds):  # type: ignore[arg-type]
        turns = _merge_runs(part, options.merge_separator)  # type: ignore[arg-type]
        if not any(t.is_ai for t in turns):
            stats.dropped["no_ai_turn"] += 1
            continue
        for turn in turns:
            if redacting:
                turn.content = _redact(turn.content, options, stats)
            turn.content, special = SPECIAL_TOKEN_RE.subn("[special token]", turn.content)
            if special:
                stats.redactions["special_token"] += special
            if group and not turn.is_ai:
                sender = turn.additional_kwargs["sender"]
                if sender not in labels:
                    hidden = redacting and _redact(sender, options, MergedStats()) != sender
                    labels[sender] = f"Person {len(labels) + 1}" if hidden else sender
                if options.group_chats == "name":
                    turn.name = openai_name(labels[sender])
                else:
                    turn.content = f"{labels[sender]}: {turn.content}"
            line = {"role": "assistant" if turn.is_ai else "user", "content": turn.content}
            if turn.name:
                line["name"] = turn.name
            turn.tokens = counter.count_example([line]) - priming
        windows = window(turns, budget, options.overlap_messages, lambda t: t.tokens, is_reply=lambda t: t.is_ai)  # type: ignore[arg-type,attr-defined]
        oversized = sum(1 for t in turns if t.is_ai and t.tokens > budget)
        if oversized:
            stats.dropped["ai_turn_over_budget"] += oversized
        if not windows:
            stats.dropped["no_ai_turn_within_budget"] += 1
        yield from windows  # type: ignore[misc]


def _redact(text: str, options: DatasetConfig, stats: MergedStats) -> str:
    redacted, counts = redact(
        text,
        phones=options.redact_phones,
        emails=options.redact_emails,
        codes=options.redact_codes,
        urls=options.redact_urls,
    )
    stats.redactions.update(counts)
    return redacted


def turn_dict(turn: Turn) -> dict[str, Any]:
    """A turn in LangChain's messages_to_dict form (AIMessage or HumanMessage)."""
    kind = "ai" if turn.is_ai else "human"
    data: dict[str, Any] = {
        "content": turn.content,
        "additional_kwargs": {
            **turn.additional_kwargs,
            "last_message_time_iso": unix_to_iso(turn.additional_kwargs["last_message_time"]),
        },
        "response_metadata": {},
        "type": kind,
        "name": turn.name,
        "id": None,
    }
    if turn.is_ai:
        data.update(tool_calls=[], invalid_tool_calls=[], usage_metadata=None)
    return {"type": kind, "data": data}


def write_merged(sessions_path: Path, target: Path, options: DatasetConfig, counter: TokenCounter) -> MergedStats:
    """Shape sessions.json into merged.json, one chat at a time; validated per example and
    published atomically. An ai_sender that matches nobody is an error listing the senders."""
    header, sessions = read_stream(sessions_path, "sessions")
    if header.get("format") != SESSIONS_FORMAT:
        raise DatasetError(f"{sessions_path} is not a sessions.json written by imessage-finetune; rebuild it")
    is_ai = ai_matcher(options.ai_sender)
    stats = MergedStats(sessions=read_trailer(sessions_path, "stats"))
    senders: Counter[str] = Counter()
    envelope = {"format": FORMAT, "version": VERSION, "ai_sender": options.ai_sender}
    with atomic_write(target) as out:
        stream = StreamWriter(out, envelope, "examples")
        for session in sessions:
            stats.chats_in += 1
            stats.messages_in += len(session["messages"])
            for message in session["messages"]:
                kwargs = message["data"]["additional_kwargs"]
                senders[kwargs["sender"]] += 1
                stats.ai_messages += is_ai(kwargs)
            if session["is_group"] and options.group_chats == "exclude":
                stats.dropped["group_chat"] += 1
                continue
            for part, turns in enumerate(shape_session(session, options, is_ai, counter, stats)):
                example = {
                    "chat_id": session["chat_id"],
                    "chat_identifier": session["chat_identifier"],
                    "display_name": session["display_name"],
                    "is_group": session["is_group"],
                    "part": part,
                    "messages": [turn_dict(t) for t in turns],
                }
                validate_document(artifacts.MERGED, example, "example", at=f"/examples/{stats.examples}")
                stream.add(example)
                stats.examples += 1
                stats.turns += len(turns)
        if not stats.ai_messages:
            listed = ", ".join(f"{name} ({n})" for name, n in senders.most_common(20))
            raise DatasetError(
                f"dataset.ai_sender {options.ai_sender!r} matches nobody in sessions.json; use "
                f'"me" for your own messages or one of these senders (messages): {listed}'
            )
        summary = stats_dict(stats)
        validate_document(artifacts.MERGED, {**envelope, "examples": [], "stats": summary})
        stream.close("stats", summary)
    return stats


def stats_dict(stats: MergedStats) -> dict[str, Any]:
    """The stage's counts with sorted keys, for the artifact and the report."""
    return {
        "sessions": stats.sessions,
        "chats_in": stats.chats_in,
        "messages_in": stats.messages_in,
        "examples": stats.examples,
        "turns": stats.turns,
        "dropped": dict(sorted(stats.dropped.items())),
        "redactions": dict(sorted(stats.redactions.items())),
    }


# What shapes merged.json: every [dataset] key but the split's (the dataset stage's), and the
# target model, whose tokenizer measures the token budget.
KEYS = (
    "dataset.ai_sender",
    "dataset.merge_separator",
    "dataset.idle_gap_hours",
    "dataset.max_tokens",
    "dataset.overlap_messages",
    "dataset.group_chats",
    "dataset.system_prompt",
    "dataset.redact_phones",
    "dataset.redact_emails",
    "dataset.redact_codes",
    "dataset.redact_urls",
    "finetune.model",
)


def run(ctx: StageContext) -> None:
    """Shape sessions.json into merged.json."""
    config = ctx.config
    stats = write_merged(
        ctx.path(artifacts.SESSIONS), ctx.path(artifacts.MERGED), config.dataset, counter_for(config.finetune.model)
    )
    ctx.say(
        f"{stats.messages_in} messages -> {stats.turns} turns in {stats.examples} examples "
        f"(AI side: {config.dataset.ai_sender}); dropped: {counts(stats.dropped)}"
    )


STAGE = Stage(
    name="merged",
    doc="Merge runs, choose the AI voice, cut sessions and windows into merged.json.",
    run=run,
    reads=(artifacts.SESSIONS,),
    writes=(artifacts.MERGED,),
    keys=KEYS,
)
