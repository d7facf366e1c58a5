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
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.atomic import atomic_path, atomic_write
from imessage_finetune.config import ConfigLike, ConfigView
from imessage_finetune.errors import ContactsError
from imessage_finetune.jsonio import dump_json
from imessage_finetune.schema_check import validate_document
from imessage_finetune.sources.chatdb.connection import (
    ADDRESSBOOK,
    CHAT_DB,
    check_database_file,
    open_readonly,
    require_messages_tables,
    sidecar,
    translate_sqlite_errors,
)
from imessage_finetune.sources.contacts import contacts_sources, read_contacts
from imessage_finetune.stages.stage import Stage, StageContext


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


def source_database(config: ConfigLike) -> Path:
    """The chat.db the snapshot copies: the configured one, or the demo's."""
    if config.uses_demo:
        return artifacts.DEMO_SOURCE_CHAT_DB.path(config.artifacts_dir)
    return config.source_path()


def contacts_databases(config: ConfigLike) -> list[Path]:
    """The Contacts databases that name the handles: configured, the demo's, or macOS's."""
    explicit = config.contacts_paths()
    if config.uses_demo and explicit is None:
        return [artifacts.DEMO_SOURCE_ADDRESSBOOK.path(config.artifacts_dir)]
    return contacts_sources(explicit)


def _contacts_or_none(config: ConfigLike) -> list[Path]:
    """The Contacts databases, or none when macOS refuses to list them (the stage's check
    then says so in one line, when it runs)."""
    try:
        return contacts_databases(config)
    except ContactsError:
        return []


def watched(config: ConfigView) -> list[Path]:
    """chat.db, its WAL and the Contacts databases: live files, compared by content."""
    return source_files(source_database(config)) + _contacts_or_none(config)


def params(config: ConfigView) -> dict[str, Any]:
    """The databases read, as resolved paths."""
    return {"source": str(source_database(config)), "contacts": [str(p) for p in _contacts_or_none(config)]}


def check(ctx: StageContext) -> None:
    """Refuse, in one line and before anything is written, a source or a Contacts database
    that cannot be read (no Full Disk Access, a folder, not SQLite)."""
    check_database_file(source_database(ctx.config), CHAT_DB)
    for path in contacts_databases(ctx.config):
        check_database_file(path, ADDRESSBOOK)


def run(ctx: StageContext) -> None:
    """Copy the source and publish the Contacts names."""
    busy_timeout = ctx.config.source.busy_timeout
    summary = take_snapshot(source_database(ctx.config), ctx.path(artifacts.SNAPSHOT), busy_timeout=busy_timeout)
    people = write_contacts(contacts_databases(ctx.config), ctx.path(artifacts.CONTACTS), busy_timeout=busy_timeout)
    ctx.say(
        f"{summary.messages} messages in {summary.chats} chats"
        f"{'' if summary.changed else ' (content unchanged)'}; "
        f"{people.names} contact handles from {people.sources} Contacts database(s)"
    )


STAGE = Stage(
    name="snapshot",
    doc="Copy chat.db (WAL included, read-only) and read the Contacts names.",
    run=run,
    writes=(artifacts.SNAPSHOT, artifacts.CONTACTS),
    keys=("source.path", "source.contacts"),
    side_keys=("source.busy_timeout",),
    params=params,
    watched=watched,
    after=("demo",),
    check=check,
)
