"""Stage `snapshot`: a consistent, private copy of chat.db (`artifacts/chat.db`), and the
handle-to-name map from the Contacts databases (`artifacts/contacts.json`).

The copy is made with SQLite's online backup API from a read-only connection, so rows that
live only in `chat.db-wal` are included and the source is never written. Later stages read
only the snapshot, so the live database is touched once per change.

The source may also be an iPhone or iPad backup folder: its sms.db (same schema) is copied,
or decrypted, into a private folder inside the artifacts folder, snapshotted like chat.db,
and removed; the names come from the backup's own Contacts (`sources/ios_backup/`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
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
from imessage_finetune.sources.contacts import ContactBook, contacts_sources, read_contacts
from imessage_finetune.sources.ios_backup import (
    BackupInfo,
    PasswordProvider,
    backup_database,
    password_provider,
    read_backup_info,
    watched_files,
)
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
    return publish_contacts(read_contacts(sources, busy_timeout), len(sources), target)


def publish_contacts(book: ContactBook, sources: int, target: Path) -> ContactsSummary:
    """Publish a contact book read from `sources` databases as contacts.json."""
    document = {"sources": sources, "contacts": book.to_mapping()}
    validate_document(artifacts.CONTACTS, document)
    with atomic_write(target) as handle:
        handle.write(dump_json(document))
    return ContactsSummary(sources=sources, names=len(book))


def backup_folder(config: ConfigLike) -> Path | None:
    """The configured source when it is an iPhone or iPad backup (a folder), else None."""
    if config.uses_demo:
        return None
    path = config.source_path()
    return path if path.is_dir() else None


def _explicit_contacts(config: ConfigLike) -> list[Path] | None:
    """The Contacts databases named in [source] contacts; None for auto (for a backup: its own)."""
    return config.contacts_paths()


def backup_password(config: ConfigLike, ask: Callable[[str], str | None] | None) -> PasswordProvider:
    """Where an encrypted backup's password comes from: [source] backup_password_file, the
    environment, then `ask` (a question on the terminal, without echo)."""

    def question(info: BackupInfo) -> str | None:
        if ask is None:
            return None
        return ask(f"Password of the encrypted backup of {info.device_name or info.udid} ({info.path})")

    return password_provider(config.backup_password_path(), question)


@dataclass(frozen=True)
class BackupSnapshot:
    """What the snapshot of a backup holds, and which backup it was."""

    backup: BackupInfo
    snapshot: SnapshotSummary
    contacts: ContactsSummary


def snapshot_backup(
    backup: Path,
    snapshot_target: Path,
    contacts_target: Path,
    *,
    work_parent: Path,
    password: PasswordProvider | None,
    contacts: list[Path] | None,
    busy_timeout: float = 10.0,
) -> BackupSnapshot:
    """Publish chat.db and contacts.json from a backup; the backup is only read.

    The databases are taken out into a private folder under `work_parent` (the artifacts
    folder) and removed when done, whatever happens. Everything is read before anything is
    published, so a bad backup or Contacts database leaves the artifacts as they were.
    `contacts` None: the backup's own Contacts.
    """
    with backup_database(backup, work_parent, password, contacts, busy_timeout) as found:
        snapshot = take_snapshot(found.sms_db, snapshot_target, busy_timeout=busy_timeout)
        people = publish_contacts(found.book, found.contact_sources, contacts_target)
    return BackupSnapshot(backup=found.info, snapshot=snapshot, contacts=people)


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
    """chat.db, its WAL and the Contacts databases: live files, compared by content. For a
    backup: its Manifest files and the databases' own files, found by their fixed file IDs
    (no password needed), so a newer backup of the phone rebuilds the snapshot."""
    backup = backup_folder(config)
    if backup is not None:
        explicit = _explicit_contacts(config)
        return watched_files(backup, contacts=explicit is None) + (explicit or [])
    return source_files(source_database(config)) + _contacts_or_none(config)


def params(config: ConfigView) -> dict[str, Any]:
    """The databases read, as resolved paths (never a backup's password: parameters are
    saved in doit's state file)."""
    backup = backup_folder(config)
    if backup is not None:
        explicit = _explicit_contacts(config)
        return {"source": str(backup), "contacts": "backup" if explicit is None else [str(p) for p in explicit]}
    return {"source": str(source_database(config)), "contacts": [str(p) for p in _contacts_or_none(config)]}


def check(ctx: StageContext) -> None:
    """Refuse, in one line and before anything is written, a source or a Contacts database
    that cannot be read (no Full Disk Access, a folder that is not a backup, not SQLite)."""
    backup = backup_folder(ctx.config)
    if backup is not None:
        read_backup_info(backup)  # a folder that is not a backup, or that macOS guards
        for path in _explicit_contacts(ctx.config) or []:
            check_database_file(path, ADDRESSBOOK)
        return
    check_database_file(source_database(ctx.config), CHAT_DB)
    for path in contacts_databases(ctx.config):
        check_database_file(path, ADDRESSBOOK)


def _run_backup(ctx: StageContext, backup: Path) -> None:
    done = snapshot_backup(
        backup,
        ctx.path(artifacts.SNAPSHOT),
        ctx.path(artifacts.CONTACTS),
        work_parent=ctx.artifacts_dir,
        password=backup_password(ctx.config, ctx.secret),
        contacts=_explicit_contacts(ctx.config),
        busy_timeout=ctx.config.source.busy_timeout,
    )
    info, summary, people = done.backup, done.snapshot, done.contacts
    when = f", backed up {info.date:%Y-%m-%d %H:%M} UTC" if info.date else ""
    if _explicit_contacts(ctx.config) is not None:
        origin = f"from {people.sources} Contacts database(s)"
    else:
        origin = "from the backup's Contacts" if people.sources else "(the backup holds no Contacts database)"
    ctx.say(
        f"{summary.messages} messages in {summary.chats} chats from the backup of "
        f"{info.device_name or info.udid} ({info.ios}{when})"
        f"{'' if summary.changed else ' (content unchanged)'}; {people.names} contact handles {origin}"
    )


def run(ctx: StageContext) -> None:
    """Copy the source (or take it out of a backup) and publish the Contacts names."""
    backup = backup_folder(ctx.config)
    if backup is not None:
        _run_backup(ctx, backup)
        return
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
    # The password file says how to open a backup, not what is in it.
    side_keys=("source.busy_timeout", "source.backup_password_file"),
    params=params,
    watched=watched,
    after=("demo",),
    check=check,
)
