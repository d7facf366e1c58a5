"""Names from an iPhone's own Contacts database, resolved exactly as from a Mac's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ios_backup_builder import ALICE, PASSWORD, PEOPLE, make_backup

from imessage_finetune.fixtures.ios_backup import (
    ADDRESSBOOK,
    write_backup,
)
from imessage_finetune.sources.contacts import ContactBook, read_contacts
from imessage_finetune.sources.ios_backup import (
    PASSWORD_ENV,
    extracted_backup,
    password_provider,
    read_ios_contacts,
)

GIVEN = password_provider(None, environ={PASSWORD_ENV: PASSWORD})


def work_folder(tmp_path: Path) -> Path:
    work = tmp_path / "artifacts"
    work.mkdir(mode=0o700, exist_ok=True)
    return work


def test_ios_addressbook_names_handles_exactly_like_the_macos_contacts(tmp_path: Path, history) -> None:
    """The same people in the iOS schema and the macOS schema give the same handle-to-name map."""
    backup = make_backup(tmp_path / "backup", history)
    with extracted_backup(backup, work_folder(tmp_path), GIVEN) as found:
        conn = sqlite3.connect(found.addressbook)
        try:
            contacts = read_ios_contacts(conn)
        finally:
            conn.close()
    assert contacts == PEOPLE
    ios = ContactBook.from_contacts(contacts)
    mac = read_contacts([history.mac_addressbook])
    assert ios.to_mapping() == mac.to_mapping()
    assert ios.name_for(ALICE) == "Alice Liddell" and ios.name_for("BOB@example.com") == "Bob"


def test_backup_without_an_addressbook_gives_no_names(tmp_path: Path, history) -> None:
    """Contacts kept only in iCloud: the backup has no AddressBook, which is not an error."""
    files = {k: v for k, v in history.files.items() if k != ADDRESSBOOK}
    backup = write_backup(tmp_path / "backup", files)
    with extracted_backup(backup, work_folder(tmp_path), None) as found:
        assert found.addressbook is None
