"""Looking at a Messages database before training on it: its conversations, and a diagnosis.

Both read the database once through the same reader as the pipeline, so the counts are
the messages the pipeline would keep. The diagnosis counts rows of the database and, with
the same reader options, the messages the sessions stage keeps, so its kept figures are the
stage's own (a message joined to two chats is kept, and counted, in each).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from imessage_finetune.sources.chatdb.dates import apple_to_unix, unix_to_iso
from imessage_finetune.sources.chatdb.reader import Chat, ChatDbReader, Names, ReaderOptions


@dataclass(frozen=True)
class Conversation:
    """One chat with the number of messages the pipeline would keep from it."""

    chat: Chat
    messages: int
    first: str | None
    last: str | None


@dataclass(frozen=True)
class Diagnosis:
    """Totals and data-quality figures of a database."""

    path: str
    message_rows: int
    chats: int
    handles: int
    first: str | None
    last: str | None
    text_only_in_attributed_body: int
    owner_rows_without_handle: int
    messages_kept: int
    excluded: dict[str, int] = field(default_factory=dict)
    handles_named: int = 0
    kept_from_attributed_body: int = 0
    """Kept messages whose text came from attributedBody (the sessions stage's count)."""
    kept_owner_without_handle: int = 0
    """Kept messages of the owner with handle_id = 0 (the sessions stage's count)."""
    kept_in_several_chats: int = 0
    """Kept messages counted more than once, because they are joined to several chats."""


def conversations(conn: sqlite3.Connection, contacts: Names, owner_name: str = "Me") -> list[Conversation]:
    """Every chat with kept messages, most messages first (ties by chat id)."""
    reader = ChatDbReader(conn, ReaderOptions(owner_name=owner_name), contacts)
    found = [
        Conversation(chat, len(msgs), unix_to_iso(msgs[0].unix_time), unix_to_iso(msgs[-1].unix_time))
        for chat, msgs in reader.conversations()
    ]
    return sorted(found, key=lambda c: (-c.messages, c.chat.rowid))


def diagnose(conn: sqlite3.Connection, path: Path, contacts: Names, options: ReaderOptions | None = None) -> Diagnosis:
    """Totals, date range, and what the reader keeps and leaves out, by reason."""
    (rows, first, last) = conn.execute("SELECT count(*), min(NULLIF(date, 0)), max(date) FROM message").fetchone()
    (attributed_only,) = conn.execute(
        "SELECT count(*) FROM message WHERE (text IS NULL OR text = '') AND attributedBody IS NOT NULL"
    ).fetchone()
    (owner_no_handle,) = conn.execute("SELECT count(*) FROM message WHERE is_from_me = 1 AND handle_id = 0").fetchone()
    handles = [h for (h,) in conn.execute("SELECT DISTINCT id FROM handle")]
    reader = ChatDbReader(conn, options or ReaderOptions(), contacts)
    kept: set[str] = set()
    for _chat, messages in reader.conversations():
        kept.update(m.guid for m in messages)
    stats = reader.stats
    first_unix, last_unix = apple_to_unix(first), apple_to_unix(last)
    return Diagnosis(
        path=str(path),
        message_rows=rows,
        chats=stats.chats,
        handles=len(handles),
        first=unix_to_iso(first_unix) if first_unix else None,
        last=unix_to_iso(last_unix) if last_unix else None,
        text_only_in_attributed_body=attributed_only,
        owner_rows_without_handle=owner_no_handle,
        messages_kept=stats.messages_kept,
        excluded=dict(sorted((str(k), v) for k, v in stats.excluded.items())),
        handles_named=sum(1 for h in handles if contacts.name_for(h)),
        kept_from_attributed_body=stats.text_from_attributed_body,
        kept_owner_without_handle=stats.owner_without_handle,
        kept_in_several_chats=stats.messages_kept - len(kept),
    )
