"""Turning chat.db rows into conversations of clean utterances.

One streaming pass over `chat_message_join` in chat order (Apple's own index), so a
million-message database is read in bounded memory, one chat at a time. Direction comes
from `is_from_me` (the owner's rows often have `handle_id = 0`), senders from a LEFT JOIN
on `handle`, chats from `chat_message_join` (never `chat_handle_join`, which would repeat a
group message once per participant), and a message joined to several chats appears in each.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple, Protocol

from imessage_finetune.sources.chatdb.dates import apple_to_unix
from imessage_finetune.sources.chatdb.message_kinds import Exclusion, classify
from imessage_finetune.sources.chatdb.schema import (
    CHAT_STYLE_GROUP,
    MESSAGE_COLUMNS,
    OPTIONAL_MESSAGE_COLUMNS,
)


class Names(Protocol):
    """Names for handles (a `sources.contacts.ContactBook`)."""

    def name_for(self, handle: str) -> str | None:
        """The name of a handle, or None when unknown."""
        ...


class _NoNames:
    def name_for(self, handle: str) -> str | None:
        return None


@dataclass(frozen=True)
class Participant:
    """A member of a chat other than the owner."""

    handle: str
    name: str | None


@dataclass(frozen=True)
class Chat:
    """A conversation (a `chat` row)."""

    rowid: int
    guid: str
    identifier: str
    display_name: str
    service: str
    is_group: bool
    participants: tuple[Participant, ...]

    @property
    def title(self) -> str:
        """The name a person would recognise: display name, else participants, else identifier."""
        if self.display_name:
            return self.display_name
        names = [p.name or p.handle for p in self.participants]
        return ", ".join(names) if names else self.identifier


class Message(NamedTuple):
    """One kept utterance, with its final text.

    A named tuple (immutable, like a frozen dataclass, at a third of its cost per message).
    """

    rowid: int
    guid: str
    unix_time: float
    text: str
    is_from_me: bool
    sender: str
    handle: str | None
    service: str
    edited: bool
    reply_to: str | None


# Messages in (time, ROWID) order.
_BY_TIME = attrgetter("unix_time", "rowid")


@dataclass(frozen=True)
class ReaderOptions:
    """What the reader keeps. Dates are Unix seconds (start inclusive, end exclusive)."""

    owner_name: str = "Me"
    attachments: str = "skip"
    attachment_placeholder: str = "[attachment]"
    include_chats: tuple[str, ...] = ()
    exclude_chats: tuple[str, ...] = ()
    start: float | None = None
    end: float | None = None
    groups: bool = True
    drop_sms_reactions: bool = True


@dataclass
class ReadStats:
    """What the reader saw and what it left out, by reason."""

    chats: int = 0
    chats_kept: int = 0
    messages_kept: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    chats_excluded: Counter[str] = field(default_factory=Counter)
    text_from_attributed_body: int = 0
    owner_without_handle: int = 0


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _select_list(conn: sqlite3.Connection) -> str:
    present = _columns(conn, "message")
    blobs = {"attributedBody", "message_summary_info"}
    parts = []
    for column in MESSAGE_COLUMNS + OPTIONAL_MESSAGE_COLUMNS:
        if column not in present:
            parts.append(f"NULL AS {column}")
        elif column in blobs:  # some databases hand blobs back as TEXT
            parts.append(f"CAST(m.{column} AS BLOB) AS {column}")
        else:
            parts.append(f"m.{column} AS {column}")
    return ", ".join(parts)


class ChatDbReader:
    """Reads conversations from an open Messages database connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        options: ReaderOptions | None = None,
        contacts: Names | None = None,
    ) -> None:
        self.conn = conn
        self.options = options or ReaderOptions()
        self.contacts: Names = contacts or _NoNames()
        self.stats = ReadStats()
        self._names: dict[str, str] = {}

    def name_for(self, handle: str) -> str:
        """The contact name for a handle, else the handle itself."""
        name = self._names.get(handle)
        if name is None:
            name = self.contacts.name_for(handle) or handle
            self._names[handle] = name
        return name

    def chats(self) -> list[Chat]:
        """Every chat, in ROWID order, with its current participants."""
        members: dict[int, list[Participant]] = {}
        for chat_id, handle in self.conn.execute(
            "SELECT j.chat_id, h.id FROM chat_handle_join j JOIN handle h ON h.ROWID = j.handle_id "
            "ORDER BY j.chat_id, h.ROWID"
        ):
            members.setdefault(chat_id, []).append(Participant(handle=handle, name=self.contacts.name_for(handle)))
        chats = []
        for rowid, guid, identifier, display_name, service, style in self.conn.execute(
            "SELECT ROWID, guid, chat_identifier, display_name, service_name, style FROM chat ORDER BY ROWID"
        ):
            chats.append(
                Chat(
                    rowid=rowid,
                    guid=guid or "",
                    identifier=identifier or "",
                    display_name=display_name or "",
                    service=service or "",
                    is_group=style == CHAT_STYLE_GROUP,
                    participants=tuple(members.get(rowid, ())),
                )
            )
        return chats

    def _chat_selected(self, chat: Chat) -> str | None:
        """None when the chat is kept, else the reason it is left out."""
        options = self.options
        if chat.is_group and not options.groups:
            return "group_chats_off"
        keys = {chat.identifier.casefold(), chat.display_name.casefold()}
        for p in chat.participants:
            keys.add(p.handle.casefold())
            if p.name:
                keys.add(p.name.casefold())
        keys.discard("")
        if options.include_chats and not keys & {k.casefold() for k in options.include_chats}:
            return "not_included"
        if keys & {k.casefold() for k in options.exclude_chats}:
            return "excluded_by_config"
        return None

    def conversations(self) -> Iterator[tuple[Chat, list[Message]]]:
        """Yield each selected chat that has kept messages, messages in (date, ROWID) order."""
        chats = {chat.rowid: chat for chat in self.chats()}
        self.stats.chats = len(chats)
        selected = {}
        for rowid, chat in chats.items():
            reason = self._chat_selected(chat)
            if reason:
                self.stats.chats_excluded[reason] += 1
            else:
                selected[rowid] = chat
        self._count_orphans()
        query = (
            f"SELECT j.chat_id, h.id AS handle, {_select_list(self.conn)} "
            "FROM chat_message_join j JOIN message m ON m.ROWID = j.message_id "
            "LEFT JOIN handle h ON h.ROWID = m.handle_id "
            "ORDER BY j.chat_id, j.message_date, j.message_id"
        )
        cursor = self.conn.execute(query)
        names = [d[0] for d in cursor.description]
        current_chat: int | None = None
        batch: list[Message] = []
        for row in cursor:
            record = dict(zip(names, row, strict=True))
            chat_id = record["chat_id"]
            if chat_id != current_chat:
                if current_chat is not None and batch:
                    yield from self._finish(selected[current_chat], batch)
                current_chat, batch = chat_id, []
            if chat_id not in selected:
                continue
            message = self._message(record)
            if message is not None:
                batch.append(message)
        if current_chat is not None and batch:
            yield from self._finish(selected[current_chat], batch)

    def _finish(self, chat: Chat, batch: list[Message]) -> Iterator[tuple[Chat, list[Message]]]:
        # chat_message_join.message_date can lag message.date; order by the message itself.
        batch.sort(key=_BY_TIME)
        self.stats.chats_kept += 1
        self.stats.messages_kept += len(batch)
        yield chat, batch

    def _count_orphans(self) -> None:
        (orphans,) = self.conn.execute(
            "SELECT count(*) FROM message m WHERE NOT EXISTS "
            "(SELECT 1 FROM chat_message_join j WHERE j.message_id = m.ROWID)"
        ).fetchone()
        if orphans:
            self.stats.excluded[Exclusion.ORPHAN] += orphans

    def _message(self, row: dict[str, object]) -> Message | None:
        options = self.options
        unix_time = apple_to_unix(row["date"])  # type: ignore[arg-type]
        if unix_time is None:
            unix_time = 0.0
        if (options.start is not None and unix_time < options.start) or (
            options.end is not None and unix_time >= options.end
        ):
            self.stats.excluded[Exclusion.OUTSIDE_DATES] += 1
            return None
        verdict = classify(row, options.drop_sms_reactions)
        if verdict.excluded:
            if verdict.excluded in (Exclusion.ATTACHMENT_ONLY, Exclusion.AUDIO) and (
                options.attachments == "placeholder"
            ):
                text = options.attachment_placeholder
            else:
                self.stats.excluded[verdict.excluded] += 1
                return None
        else:
            text = verdict.text
        if verdict.from_attributed_body:
            self.stats.text_from_attributed_body += 1
        is_from_me = bool(row["is_from_me"])
        handle = row["handle"] if isinstance(row["handle"], str) else None
        if is_from_me:
            sender = options.owner_name
            if not row["handle_id"]:
                self.stats.owner_without_handle += 1
        else:
            sender = self.name_for(handle) if handle else "Unknown"
        # Positional, in the order of Message's fields: the cheapest way to build one.
        return Message(
            int(row["ROWID"]),  # type: ignore[call-overload]
            str(row["guid"]),
            unix_time,
            text,
            is_from_me,
            sender,
            None if is_from_me else handle,
            str(row["service"] or ""),
            bool(row["date_edited"]),
            row["thread_originator_guid"] or None,  # type: ignore[arg-type]
        )
