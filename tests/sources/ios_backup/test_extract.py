"""Taking sms.db and AddressBook.sqlitedb out of a backup, plain or encrypted, and every way a
backup can be unreadable: each a typed error whose one line says what to do, with nothing left
behind in the private folder and nothing written to the backup.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from ios_backup_builder import PASSWORD, make_backup, tree_digest

from imessage_finetune.errors import (
    BackupDamaged,
    BackupPasswordError,
    BackupUnsupported,
    BackupWithoutMessages,
    NotABackup,
)
from imessage_finetune.fixtures.ios_backup import (
    SMS,
    Device,
    Encryption,
    write_backup,
)
from imessage_finetune.sources.ios_backup import (
    PASSWORD_ENV,
    extracted_backup,
    password_provider,
    watched_files,
)
from imessage_finetune.sources.ios_backup.folder import file_id

GIVEN = password_provider(None, environ={PASSWORD_ENV: PASSWORD})


def rows(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT ROWID, guid, text, date FROM message ORDER BY ROWID").fetchall()
    finally:
        conn.close()


def work_folder(tmp_path: Path) -> Path:
    work = tmp_path / "artifacts"
    work.mkdir(mode=0o700, exist_ok=True)
    return work


def extract(backup: Path, tmp_path: Path, password=GIVEN) -> None:
    work = work_folder(tmp_path)
    try:
        with extracted_backup(backup, work, password):
            pass
    finally:
        assert list(work.iterdir()) == [], "the private folder was left behind"


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_extracts_only_the_needed_files_into_the_private_folder_and_never_writes_the_backup(
    tmp_path: Path, history, encrypted: bool
) -> None:
    """sms.db comes out whole (its WAL rows folded in), with AddressBook and Manifest.db and
    nothing else, inside the given folder, which is emptied afterwards; the backup is unchanged."""
    backup = make_backup(tmp_path / "backup", history, encrypted=encrypted)
    before = tree_digest(backup)
    work = work_folder(tmp_path)
    with extracted_backup(backup, work, GIVEN) as found:
        (private,) = list(work.iterdir())
        assert sorted(p.name for p in private.iterdir()) == ["AddressBook.sqlitedb", "Manifest.db", "sms.db"]
        assert rows(found.sms_db) == rows(history.chat_db)
        assert any(text == "no room! no room!" for _, _, text, _ in rows(found.sms_db))  # was WAL-only
        assert found.info.encrypted is encrypted and found.info.device_name == "Ana’s iPhone"
    assert list(work.iterdir()) == []
    assert tree_digest(backup) == before


def test_watched_files_are_the_manifest_and_the_databases_by_file_id(tmp_path: Path) -> None:
    """Staleness needs no password: the files are found by their fixed file IDs."""
    names = [p.name for p in watched_files(tmp_path, contacts=True)]
    assert names[:2] == ["Manifest.plist", "Manifest.db"]
    assert "3d0d7e5fb2ce288813306e4d4636395e047a3d28" in names  # chatdb.md §8
    assert len(watched_files(tmp_path, contacts=False)) == 4


def test_folder_that_is_not_a_backup(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "IMG_0001.HEIC").write_bytes(b"\0")
    with pytest.raises(NotABackup, match=r"is a folder but not an iPhone or iPad backup .* `imessage-finetune backups`"):
        extract(tmp_path / "photos", tmp_path)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_backup_without_messages_says_they_are_in_icloud(tmp_path: Path, history, encrypted: bool) -> None:
    """No sms.db in the backup: the phone keeps its messages in iCloud; say what to do."""
    files = {k: v for k, v in history.files.items() if k[1].startswith("Library/AddressBook")}
    backup = write_backup(tmp_path / "backup", files, encryption=Encryption(PASSWORD) if encrypted else None)
    with pytest.raises(BackupWithoutMessages, match=r"holds no messages.*Messages in iCloud.*back it up again"):
        extract(backup, tmp_path)


def test_backup_with_an_empty_messages_database_says_they_are_in_icloud(tmp_path: Path, history) -> None:
    from chatdb_builder import ChatDbBuilder

    ChatDbBuilder(tmp_path / "empty.db").close()
    backup = write_backup(tmp_path / "backup", {SMS: (tmp_path / "empty.db").read_bytes()})
    with pytest.raises(BackupWithoutMessages, match="is empty; that is how a backup looks"):
        extract(backup, tmp_path)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_truncated_manifest_db(tmp_path: Path, history, encrypted: bool) -> None:
    """An interrupted backup's Manifest.db cut in half (at a block boundary when encrypted)."""
    backup = make_backup(tmp_path / "backup", history, encrypted=encrypted)
    manifest = backup / "Manifest.db"
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 32 * 16])
    with pytest.raises(BackupDamaged, match=r"Manifest.db (is truncated|does not decrypt).*make a new backup"):
        extract(backup, tmp_path)


def test_missing_content_file(tmp_path: Path, history) -> None:
    backup = make_backup(tmp_path / "backup", history)
    identifier = file_id(*SMS)
    (backup / identifier[:2] / identifier).unlink()
    with pytest.raises(BackupDamaged, match=f"lists Library/SMS/sms.db but its file 3d/{identifier} is missing"):
        extract(backup, tmp_path)


def test_wrong_password_says_so_and_never_shows_a_password(tmp_path: Path, history) -> None:
    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    wrong = password_provider(None, environ={PASSWORD_ENV: "Tr0ub4dor&3"})
    with pytest.raises(BackupPasswordError, match=f"wrong password .* it came from the environment variable {PASSWORD_ENV}") as caught:
        extract(backup, tmp_path, wrong)
    assert "Tr0ub4dor" not in str(caught.value) and PASSWORD not in str(caught.value)


def test_encrypted_backup_without_a_password_says_where_to_give_one(tmp_path: Path, history) -> None:
    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    with pytest.raises(BackupPasswordError, match=r"encrypted backup: give its password .*backup_password_file.*IMESSAGE_FINETUNE_BACKUP_PASSWORD"):
        extract(backup, tmp_path, password_provider(None, environ={}))


def test_backup_of_an_ios_version_the_decryptor_does_not_know_names_the_version(tmp_path: Path, history) -> None:
    """A future keybag format: the error says which iOS made the backup and which decryptor refused."""
    backup = write_backup(
        tmp_path / "backup",
        history.files,
        device=Device(ios_version="27.0"),
        encryption=Encryption(PASSWORD, keybag_type=4),
    )
    with pytest.raises(BackupUnsupported, match=r"made by iOS 27\.0, whose backup encryption iphone-backup-decrypt 0\.11\.\d+ does not know"):
        extract(backup, tmp_path)


def test_backup_older_than_ios_10_names_the_version(tmp_path: Path, history) -> None:
    backup = make_backup(tmp_path / "backup", history, device=Device(ios_version="9.3.5"))
    (backup / "Manifest.db").rename(backup / "Manifest.mbdb")
    with pytest.raises(BackupUnsupported, match=r"made by iOS 9\.3\.5, which lists its files in Manifest\.mbdb"):
        extract(backup, tmp_path)
