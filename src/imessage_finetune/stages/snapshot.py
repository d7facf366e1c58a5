"""Stage `snapshot`: a consistent, private copy of chat.db (`artifacts/chat.db`), and the
handle-to-name map from the Contacts databases (`artifacts/contacts.json`).

The copy is made with SQLite's online backup API from a read-only connection, so rows that
live only in `chat.db-wal` are included and the source is never written. Later stages read
only the snapshot, so the live database is touched once per change.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_path, atomic_write
from imessage_finetune.sources.chatdb.connection import (
    open_readonly,
    require_messages_tables,
    sidecar,
    translate_sqlite_errors,
)
from imessage_finetune.sources.contacts import read_contacts
from imessage_finetune.jsonio import dump_json
from imessage_finetune.schema_check import validate_document

@dataclass(frozen=True)
class SnapshotSummary:
    """What the snapshot holds and whether the artifact's bytes changed."""

    messages: int
    chats: int
    changed: bool


@dataclass(frozen=True)
class ContactsSummary:
    """How many Contacts databases were read and how many handles they name."""

    sources: int
    names: int


def source_files(source: Path) -> list[Path]:
    """The files whose bytes are the database's content: the main file and its WAL.

    `-shm` is left out: it is an index that every reader rewrites, not content.
    """
    return [source, sidecar(source, "-wal")]


def take_snapshot(source: Path, target: Path, *, busy_timeout: float = 10.0) -> SnapshotSummary:
    """Copy `source` (a live chat.db) to `target`, consistently and without writing to it.

    The target is replaced only when its bytes change.
    """
    with open_readonly(source, busy_timeout=busy_timeout) as src:
        require_messages_tables(src, source)
        with atomic_path(target) as publication:
            with translate_sqlite_errors(source, busy_timeout):
                dst = sqlite3.connect(publication.temp)
                try:
                    src.backup(dst)
                    # A self-contained file: no -wal beside the snapshot.
                    dst.execute("PRAGMA journal_mode = DELETE")
                    (messages,) = dst.execute("SELECT count(*) FROM message").fetchone()
                    (chats,) = dst.execute("SELECT count(*) FROM chat").fetchone()
                finally:
                    dst.close()
    return SnapshotSummary(messages=messages, chats=chats, changed=publication.changed)


def write_contacts(sources: list[Path], target: Path, *, busy_timeout: float = 10.0) -> ContactsSummary:
    """Read the Contacts databases read-only and publish their handle-to-name map."""
    book = read_contacts(sources, busy_timeout)
    document = {"sources": len(sources), "contacts": book.to_mapping()}
    validate_document(artifacts.CONTACTS, document)
    with atomic_write(target) as handle:
        handle.write(dump_json(document))
    return ContactsSummary(sources=len(sources), names=len(book))
