"""Build chat.db fixtures in code, in Apple's real schema (any macOS release from 10.12).

Tests describe only what matters to them (who wrote what, when, in which chat, of which
kind); every other column keeps Apple's default.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from imessage_finetune.fixtures.apple_schema import create_schema
from imessage_finetune.sources.chatdb.dates import APPLE_EPOCH_UNIX, unix_to_apple_ns
from imessage_finetune.fixtures.typedstream import encode

BASE_TIME = 1_700_000_000  # 2023-11-14T22:13:20Z


class ChatDbBuilder:
    """A Messages database under construction. `wal=True` keeps it in WAL mode."""

    def __init__(self, path: Path, *, release: str = "15", wal: bool = False) -> None:
        self.path = path
        self.release = release
        self.conn = sqlite3.connect(path, isolation_level=None)
        if wal:
            self.conn.execute("PRAGMA journal_mode = WAL")
        create_schema(self.conn, release)
        self._guids = 0
        self._clock = BASE_TIME

    def _guid(self) -> str:
        self._guids += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.path.name}/{self._guids}")).upper()

    def apple_date(self, unix_seconds: float) -> int:
        """The `date` value this release stores: seconds before 10.13, nanoseconds after."""
        if self.release == "10.12":
            return int(unix_seconds - APPLE_EPOCH_UNIX)
        return unix_to_apple_ns(unix_seconds)

    def handle(self, address: str, service: str = "iMessage") -> int:
        """Add a handle (phone number or email); return its ROWID."""
        cursor = self.conn.execute(
            "INSERT INTO handle (id, service, country, uncanonicalized_id) VALUES (?, ?, 'us', ?)",
            (address, service, address),
        )
        return int(cursor.lastrowid)  # type: ignore[arg-type]

    def chat(
        self,
        identifier: str,
        handles: list[int],
        *,
        group: bool = False,
        display_name: str = "",
        service: str = "iMessage",
    ) -> int:
        """Add a chat with its participants (not the owner); return its ROWID."""
        separator = "+" if group else "-"
        cursor = self.conn.execute(
            "INSERT INTO chat (guid, style, chat_identifier, service_name, display_name) "
            "VALUES (?, ?, ?, ?, ?)",
            (f"{service};{separator};{identifier}", 43 if group else 45, identifier, service, display_name),
        )
        chat_id = int(cursor.lastrowid)  # type: ignore[arg-type]
        for handle_id in handles:
            self.conn.execute(
                "INSERT INTO chat_handle_join (chat_id, handle_id) VALUES (?, ?)", (chat_id, handle_id)
            )
        return chat_id

    def message(
        self,
        chats: int | list[int],
        text: str | None = None,
        *,
        body: str | None = None,
        from_me: bool = False,
        handle: int = 0,
        at: float | None = None,
        service: str = "iMessage",
        **columns: Any,
    ) -> tuple[int, str]:
        """Add a message joined to `chats` ([] for an orphan); return (ROWID, guid).

        `text` fills the `text` column; `body` is encoded into `attributedBody`. `at` is Unix
        seconds (default: one minute after the previous message).
        """
        if at is None:
            self._clock += 60
            at = self._clock
        guid = columns.pop("guid", None) or self._guid()
        values: dict[str, Any] = {
            "guid": guid,
            "text": text,
            "attributedBody": encode(body) if body is not None else None,
            "handle_id": handle,
            "service": service,
            "date": self.apple_date(at),
            "is_from_me": int(from_me),
            "is_sent": int(from_me),
            "is_finished": 1,
        }
        values.update(columns)
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        cursor = self.conn.execute(f"INSERT INTO message ({names}) VALUES ({marks})", list(values.values()))
        rowid = int(cursor.lastrowid)  # type: ignore[arg-type]
        for chat_id in [chats] if isinstance(chats, int) else chats:
            self.conn.execute(
                "INSERT INTO chat_message_join (chat_id, message_id, message_date) VALUES (?, ?, ?)",
                (chat_id, rowid, values["date"]),
            )
        return rowid, guid

    def close(self) -> None:
        """Close the connection (a WAL database is checkpointed by SQLite on close)."""
        self.conn.close()
