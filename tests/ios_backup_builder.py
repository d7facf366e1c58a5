"""iPhone backups for tests, built in code from the Apple-schema fixtures the other tests use.

`phone_history` makes a Messages database in Apple's DDL that a phone would hold: a few
chats, a group, a tapback, and its newest rows still in the WAL when the backup is taken
(as on a live phone). The same people are written to a macOS Contacts database (for the
chat.db pipeline) and an iOS AddressBook.sqlitedb (for the backup), so both pipelines can
be compared.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from chatdb_builder import BASE_TIME, ChatDbBuilder
from imessage_finetune.fixtures.addressbook import write_addressbook
from imessage_finetune.sources.contacts import Contact
from imessage_finetune.fixtures.ios_backup import (
    ADDRESSBOOK,
    SMS,
    SMS_WAL,
    Encryption,
    write_backup,
    write_ios_addressbook,
)

ALICE = "+15555550101"
BOB = "bob@example.com"
PASSWORD = "correct horse ⚡ battery"
PEOPLE = [
    Contact(first="Alice", last="Liddell", phones=("(555) 555-0101",)),
    Contact(first="Bob", emails=("Bob@Example.com",)),
    Contact(nickname="Dodo", phones=("+44 20 7946 0000",)),
]


@dataclass
class PhoneHistory:
    """A phone's sms.db as the backup captured it, the complete chat.db, and its contacts."""

    files: dict[tuple[str, str], bytes]
    chat_db: Path
    mac_addressbook: Path


def phone_history(folder: Path, *, extra_message: str | None = None) -> PhoneHistory:
    """Build the phone's databases in `folder` and the files a backup of it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("chat.db", "chat.db-wal", "chat.db-shm", "AddressBook.sqlitedb"):
        (folder / name).unlink(missing_ok=True)
    db = ChatDbBuilder(folder / "chat.db", release="15", wal=True)
    db.conn.execute("PRAGMA wal_autocheckpoint = 0")
    alice, bob, stranger = db.handle(ALICE), db.handle(BOB), db.handle("+15555550199")
    one = db.chat(ALICE, [alice])
    group = db.chat("chat900", [alice, bob], group=True, display_name="Tea party")
    other = db.chat("+15555550199", [stranger])
    db.message(one, "are you coming to the party?", handle=alice, at=BASE_TIME)
    db.message(one, "yes, with the hatter", from_me=True, at=BASE_TIME + 60)
    db.message(group, None, body="more tea?", handle=bob, at=BASE_TIME + 3600)
    db.message(group, "Loved “more tea?”", handle=alice, associated_message_type=2000, at=BASE_TIME + 3660)
    db.message(other, "who is this", handle=stranger, at=BASE_TIME + 7200)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # Newer rows only in sms.db-wal, as on a phone whose Messages app is running.
    db.message(group, "no room! no room!", from_me=True, at=BASE_TIME + 86400)
    if extra_message:
        db.message(one, extra_message, handle=alice, at=BASE_TIME + 2 * 86400)
    files = {SMS: db.path.read_bytes(), SMS_WAL: (folder / "chat.db-wal").read_bytes()}
    db.close()
    write_ios_addressbook(folder / "AddressBook.sqlitedb", PEOPLE)
    files[ADDRESSBOOK] = (folder / "AddressBook.sqlitedb").read_bytes()
    write_addressbook(folder / "AddressBook-v22.abcddb", PEOPLE)
    return PhoneHistory(files, folder / "chat.db", folder / "AddressBook-v22.abcddb")


def make_backup(
    folder: Path, history: PhoneHistory, *, encrypted: bool = False, **options: object
) -> Path:
    """A Finder-style backup of `history` in `folder` (encrypted with PASSWORD if asked)."""
    encryption = Encryption(PASSWORD) if encrypted else None
    return write_backup(folder, history.files, encryption=encryption, **options)  # type: ignore[arg-type]


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder` (to show a backup was not written)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def project(folder: Path, source: Path | str, extra: str = "", contacts: str = '"auto"') -> Path:
    """A project config reading `source`, artifacts in `out`."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "finetune.toml"
    source_text = str(source).replace("\\", "/")
    config.write_text(
        f'[source]\npath = "{source_text}"\ncontacts = {contacts}\n{extra}[artifacts]\ndir = "out"\n',
        encoding="utf-8",
    )
    return config

