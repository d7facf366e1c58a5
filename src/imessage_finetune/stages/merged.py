"""Stage `merged`: conversations shaped for training (`artifacts/merged.json`).

From sessions.json, one chat at a time, by the rules of the `shaping` package (the ones the
LangChain-compatible functions of `chat_utils` apply too): each chat is cut where nobody wrote
for `idle_gap_hours`, runs of messages from one speaker are merged, the chosen voice
(`ai_sender`) becomes the AI side and everyone else the human side, optional redaction is
applied, and conversations longer than the token budget are cut into overlapping windows
that each end on an AI turn. Conversations with no AI turn are dropped and counted. All of it
is linear in the number of messages and works on plain dicts: building LangChain message
objects for 300,000 messages would cost more than the reference chain it replaces.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.config import ConfigView, DatasetConfig
from imessage_finetune.errors import DatasetError
from imessage_finetune.jsonio import StreamWriter, read_stream, read_trailer
from imessage_finetune.schema_check import validate_document
from imessage_finetune.shaping import KnownPeople, Shaper, Turn
from imessage_finetune.stages.sessions import FORMAT as SESSIONS_FORMAT
from imessage_finetune.stages.stage import Stage, StageContext, counts
from imessage_finetune.tokens import TokenCounter, counter_for

FORMAT = "imessage-finetune/merged"
VERSION = 1


@dataclass
class MergedStats:
    """What the stage produced and what it dropped, and why."""

    sessions: dict[str, Any] = field(default_factory=dict)
    chats_in: int = 0
    messages_in: int = 0
    examples: int = 0
    turns: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)


def turn_dict(turn: Turn) -> dict[str, Any]:
    """A turn in LangChain's messages_to_dict form (AIMessage or HumanMessage)."""
    data: dict[str, Any] = {
        "content": turn.content,
        "additional_kwargs": turn.additional_kwargs,
        "response_metadata": {},
        "type": turn.kind,
        "name": turn.name,
        "id": None,
    }
    if turn.kind == "ai":
        data.update(tool_calls=[], invalid_tool_calls=[], usage_metadata=None)
    return {"type": turn.kind, "data": data}


def write_merged(
    sessions_path: Path,
    target: Path,
    options: DatasetConfig,
    counter: TokenCounter,
    contacts_path: Path | None = None,
) -> MergedStats:
    """Shape sessions.json into merged.json, one chat at a time; validated per example and
    published atomically. An ai_sender that matches nobody is an error listing the senders.

    `contacts_path` (contacts.json) names the people `redact_known_names` hides, with the
    participants of sessions.json.
    """
    header, sessions = read_stream(sessions_path, "sessions")
    if header.get("format") != SESSIONS_FORMAT:
        raise DatasetError(f"{sessions_path} is not a sessions.json written by imessage-finetune; rebuild it")
    known = KnownPeople.from_artifacts(contacts_path, sessions_path) if options.redact_known_names else None
    shaper = Shaper(options, counter, known)
    stats = MergedStats(sessions=read_trailer(sessions_path, "stats"))
    ai_turns = 0
    envelope = {"format": FORMAT, "version": VERSION, "ai_sender": options.ai_sender}
    with atomic_write(target) as out:
        stream = StreamWriter(out, envelope, "examples")
        for session in sessions:
            stats.chats_in += 1
            stats.messages_in += len(session["messages"])
            for part, turns in enumerate(shaper.shape_chat(session)):
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
                ai_turns += sum(turn.kind == "ai" for turn in turns)
        if not ai_turns:
            _check_voice(sessions_path, options, shaper)
        stats.dropped, stats.redactions = shaper.counts.dropped, shaper.counts.redactions
        summary = stats_dict(stats)
        validate_document(artifacts.MERGED, {**envelope, "examples": [], "stats": summary})
        stream.close("stats", summary)
    return stats


def _check_voice(sessions_path: Path, options: DatasetConfig, shaper: Shaper) -> None:
    """Raise when the voice matches no message of sessions.json, naming the senders there.

    Read again only when no example has an AI turn: counting every message in the main
    pass would cost the common case for the sake of this one.
    """
    senders: Counter[str] = Counter()
    _, sessions = read_stream(sessions_path, "sessions")
    for session in sessions:
        for message in session["messages"]:
            kwargs = message["data"]["additional_kwargs"]
            if shaper.is_ai(kwargs):
                return
            senders[kwargs["sender"]] += 1
    listed = ", ".join(f"{name} ({n})" for name, n in senders.most_common(20))
    raise DatasetError(
        f"dataset.ai_sender {options.ai_sender!r} matches nobody in sessions.json; use "
        f'"me" for your own messages or one of these senders (messages): {listed}'
    )


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
    "dataset.redact_known_names",
    "dataset.phone_region",
    "finetune.model",
)


def inputs(config: ConfigView) -> list[artifacts.Artifact]:
    """sessions.json, and contacts.json when it names the people `redact_known_names` hides."""
    return [artifacts.SESSIONS, *([artifacts.CONTACTS] if config.dataset.redact_known_names else [])]


def run(ctx: StageContext) -> None:
    """Shape sessions.json into merged.json."""
    config = ctx.config
    stats = write_merged(
        ctx.path(artifacts.SESSIONS),
        ctx.path(artifacts.MERGED),
        config.dataset,
        counter_for(config.finetune.model),
        ctx.path(artifacts.CONTACTS),
    )
    ctx.say(
        f"{stats.messages_in} messages -> {stats.turns} turns in {stats.examples} examples "
        f"(AI side: {config.dataset.ai_sender}); dropped: {counts(stats.dropped)}"
    )


STAGE = Stage(
    name="merged",
    doc="Merge runs, choose the AI voice, cut sessions and windows into merged.json.",
    run=run,
    reads=inputs,
    writes=(artifacts.MERGED,),
    keys=KEYS,
)
