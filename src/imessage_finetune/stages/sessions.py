"""Stage `sessions`: the conversations of the snapshot as `artifacts/sessions.json`.

One entry per chat with its messages in LangChain's `messages_to_dict` form, so
`messages_from_dict` turns them back into `HumanMessage`s. The file is streamed one chat
at a time and each chat is validated against `schemas/sessions.schema.json` before it is
written, so a heavy user's database is converted in bounded memory; the file is published
atomically only when every part passed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_write
from imessage_finetune.config import ConfigLike
from imessage_finetune.jsonio import StreamWriter, load_json
from imessage_finetune.schema_check import validate_document
from imessage_finetune.sources.chatdb.connection import open_chat_db
from imessage_finetune.sources.chatdb.dates import unix_to_iso
from imessage_finetune.sources.chatdb.reader import Chat, ChatDbReader, Message, ReaderOptions, ReadStats
from imessage_finetune.sources.contacts import ContactBook
from imessage_finetune.stages.stage import Stage, StageContext, counts

FORMAT = "imessage-finetune/sessions"
VERSION = 1


# The reader's options: every key of [sessions] shapes sessions.json.
KEYS = ("sessions",)


def reader_options(config: ConfigLike) -> ReaderOptions:
    """The reader's options from the `[sessions]` section (dates as parsed with the config)."""
    section = config.sessions
    return ReaderOptions(
        owner_name=section.owner_name,
        attachments=section.attachments,
        attachment_placeholder=section.attachment_placeholder,
        include_chats=tuple(section.include_chats),
        exclude_chats=tuple(section.exclude_chats),
        start=config.dates.start,
        end=config.dates.end,
        groups=section.groups,
        drop_sms_reactions=section.drop_sms_reactions,
    )


def message_kwargs(message: Message) -> dict[str, Any]:
    """The `additional_kwargs` of a message, as LangChain users read them."""
    return {
        "message_time": int(message.unix_time),
        "message_time_iso": unix_to_iso(message.unix_time),
        "sender": message.sender,
        "is_from_me": message.is_from_me,
        "guid": message.guid,
        "handle": message.handle,
        "service": message.service,
        "edited": message.edited,
        "reply_to": message.reply_to,
    }


def message_dict(message: Message) -> dict[str, Any]:
    """One message exactly as `langchain_core.messages.messages_to_dict` writes a HumanMessage."""
    return {
        "type": "human",
        "data": {
            "content": message.text,
            "additional_kwargs": message_kwargs(message),
            "response_metadata": {},
            "type": "human",
            "name": None,
            "id": None,
        },
    }


def chat_dict(chat: Chat) -> dict[str, Any]:
    """What sessions.json says of a chat besides its messages."""
    return {
        "chat_id": chat.rowid,
        "chat_guid": chat.guid,
        "chat_identifier": chat.identifier,
        "display_name": chat.display_name,
        "service": chat.service,
        "is_group": chat.is_group,
        "participants": [{"handle": p.handle, "name": p.name} for p in chat.participants],
    }


def session_dict(chat: Chat, messages: list[Message]) -> dict[str, Any]:
    """One chat's entry in sessions.json."""
    return {**chat_dict(chat), "messages": [message_dict(m) for m in messages]}


def stats_dict(stats: ReadStats) -> dict[str, Any]:
    """The reader's counts, keys sorted so the artifact is deterministic."""
    return {
        "chats": stats.chats,
        "chats_kept": stats.chats_kept,
        "messages_kept": stats.messages_kept,
        "excluded": dict(sorted((str(k), v) for k, v in stats.excluded.items())),
        "chats_excluded": dict(sorted(stats.chats_excluded.items())),
        "text_from_attributed_body": stats.text_from_attributed_body,
        "owner_without_handle": stats.owner_without_handle,
    }


def load_contacts(path: Path) -> ContactBook:
    """The contact book published by the snapshot stage."""
    return ContactBook.from_mapping(load_json(path.read_bytes())["contacts"])


def write_sessions(
    snapshot: Path,
    contacts: ContactBook,
    target: Path,
    options: ReaderOptions,
    progress: Callable[[int, int], None] | None = None,
) -> ReadStats:
    """Read the snapshot and publish sessions.json; return what was kept and left out.

    `progress(chats_done, chats_total)` is called as chats are written.
    """
    with open_chat_db(snapshot) as conn:
        reader = ChatDbReader(conn, options, contacts)
        envelope = {"format": FORMAT, "version": VERSION, "owner_name": options.owner_name}
        with atomic_write(target) as out:
            stream = StreamWriter(out, envelope, "sessions")
            total = len(reader.chats())
            for index, (chat, messages) in enumerate(reader.conversations()):
                session = session_dict(chat, messages)
                validate_document(artifacts.SESSIONS, session, "session", at=f"/sessions/{index}")
                stream.add(session)
                if progress:
                    progress(index + 1, total)
            if progress:
                progress(total, total)
            stats = stats_dict(reader.stats)
            validate_document(artifacts.SESSIONS, {**envelope, "sessions": [], "stats": stats})
            stream.close("stats", stats)
    return reader.stats


def run(ctx: StageContext) -> None:
    """Read the snapshot into sessions.json."""
    target = ctx.path(artifacts.SESSIONS)
    with ctx.progress() as progress:
        stats = write_sessions(
            ctx.path(artifacts.SNAPSHOT),
            load_contacts(ctx.path(artifacts.CONTACTS)),
            target,
            reader_options(ctx.config),
            progress,
        )
    ctx.say(
        f"{stats.messages_kept} messages in {stats.chats_kept} of {stats.chats} chats -> {target} "
        f"({stats.text_from_attributed_body} with text from attributedBody, {stats.owner_without_handle} "
        f"of your own with handle_id = 0, as `diagnose` counts them); "
        f"left out: {counts({str(k): v for k, v in stats.excluded.items()})}"
    )


STAGE = Stage(
    name="sessions",
    doc="Read the snapshot into sessions.json (LangChain messages_to_dict form).",
    run=run,
    reads=(artifacts.SNAPSHOT, artifacts.CONTACTS),
    writes=(artifacts.SESSIONS,),
    keys=KEYS,
)
