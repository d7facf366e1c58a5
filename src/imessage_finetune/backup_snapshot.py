"""The snapshot stage for an iPhone or iPad backup: `artifacts/chat.db` from the backup's sms.db,
`artifacts/contacts.json` from its AddressBook.sqlitedb (or the configured Contacts databases).

sms.db has the Messages schema, so once it is out of the backup (copied, or decrypted into
the private artifacts folder) the snapshot is taken exactly as from a Mac's chat.db, and
every later stage reads the same artifacts whichever source they came from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chatdb.contacts import ContactBook
from .snapshot import ContactsSummary, SnapshotSummary, publish_contacts, read_contacts, take_snapshot
from .fingerprint import files_state
from .sources.ios_backup import BackupInfo, PasswordProvider, extracted_backup, read_backup_info, read_ios_contacts
from .sources.ios_backup.folder import denied


@dataclass(frozen=True)
class BackupSnapshot:
    """What the snapshot of a backup holds, and which backup it was."""

    backup: BackupInfo
    snapshot: SnapshotSummary
    contacts: ContactsSummary


def backup_files_state(backup: Path, watched: list[Path]) -> dict[str, Any]:
    """The state of a backup's watched files, after checking the backup can be read at all.

    A folder the system refuses to read (macOS without Full Disk Access) is a one-line
    BackupPermissionDenied here, before any file of it is hashed.
    """
    read_backup_info(backup)
    try:
        return files_state(watched)
    except PermissionError as exc:
        raise denied(Path(exc.filename or backup)) from None


def ios_contact_book(addressbook: Path | None) -> ContactBook:
    """The names in a private copy of a backup's AddressBook.sqlitedb (none without one)."""
    if addressbook is None:
        return ContactBook.from_contacts([])
    conn = sqlite3.connect(f"{addressbook.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return ContactBook.from_contacts(read_ios_contacts(conn, "the backup's AddressBook.sqlitedb"))
    finally:
        conn.close()


@dataclass(frozen=True)
class BackupDatabase:
    """A backup's sms.db (a private copy), the book naming its handles, how many Contacts
    databases that book came from, and the backup's description."""

    sms_db: Path
    book: ContactBook
    contact_sources: int
    info: BackupInfo


@contextmanager
def backup_database(
    backup: Path,
    work_parent: Path,
    password: PasswordProvider | None,
    contacts: list[Path] | None,
    busy_timeout: float = 10.0,
) -> Iterator[BackupDatabase]:
    """The backup's databases for the length of one block (then removed).

    `contacts` None means the backup's own Contacts; a list, those (macOS) databases.
    """
    with extracted_backup(backup, work_parent, password, contacts=contacts is None) as found:
        if contacts is None:
            book, sources = ios_contact_book(found.addressbook), int(found.addressbook is not None)
        else:
            book, sources = read_contacts(contacts, busy_timeout), len(contacts)
        yield BackupDatabase(found.sms_db, book, sources, found.info)


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
    """
    with backup_database(backup, work_parent, password, contacts, busy_timeout) as found:
        snapshot = take_snapshot(found.sms_db, snapshot_target, busy_timeout=busy_timeout)
        people = publish_contacts(found.book, found.contact_sources, contacts_target)
    return BackupSnapshot(backup=found.info, snapshot=snapshot, contacts=people)
