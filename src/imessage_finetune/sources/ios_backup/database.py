"""A backup opened as a Messages source: its sms.db (a private copy) and the names of its handles.

sms.db has the Messages schema, so once it is out of the backup the snapshot, `conversations`
and `diagnose` read it exactly as a Mac's chat.db, and every later stage reads the same
artifacts whichever source they came from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imessage_finetune.sources.contacts import ContactBook, read_contacts
from imessage_finetune.sources.ios_backup.addressbook import read_ios_contacts
from imessage_finetune.sources.ios_backup.extract import PasswordProvider, extracted_backup
from imessage_finetune.sources.ios_backup.folder import BackupInfo


@dataclass(frozen=True)
class BackupDatabase:
    """A backup's sms.db (a private copy), the book naming its handles, how many Contacts
    databases that book came from, and the backup's description."""

    sms_db: Path
    book: ContactBook
    contact_sources: int
    info: BackupInfo


def ios_contact_book(addressbook: Path | None) -> ContactBook:
    """The names in a private copy of a backup's AddressBook.sqlitedb (none without one)."""
    if addressbook is None:
        return ContactBook.from_contacts([])
    conn = sqlite3.connect(f"{addressbook.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return ContactBook.from_contacts(read_ios_contacts(conn, "the backup's AddressBook.sqlitedb"))
    finally:
        conn.close()


@contextmanager
def backup_database(
    backup: Path,
    work_parent: Path,
    password: PasswordProvider | None,
    contacts: list[Path] | None,
    busy_timeout: float = 10.0,
) -> Iterator[BackupDatabase]:
    """The backup's databases for the length of one block (then removed).

    `work_parent` is the private folder the copies go to (the artifacts folder). `contacts`
    None means the backup's own Contacts; a list, those (macOS) databases. Everything is
    read before the block starts, so a bad Contacts database fails before anything is
    published.
    """
    with extracted_backup(backup, work_parent, password, contacts=contacts is None) as found:
        if contacts is None:
            book, sources = ios_contact_book(found.addressbook), int(found.addressbook is not None)
        else:
            book, sources = read_contacts(contacts, busy_timeout), len(contacts)
        yield BackupDatabase(found.sms_db, book, sources, found.info)
