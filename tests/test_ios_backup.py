"""iPhone backups as a source: finding, decrypting and reading them, and every way they go wrong.

Backups are built in code (`fixtures/ios_backup.py`, encrypting side written from the
format's description), from the same Apple-schema databases the other tests build.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from ios_backup_builder import ALICE, PASSWORD, PEOPLE, make_backup, phone_history, tree_digest
from imessage_finetune.chatdb.contacts import ContactBook
from imessage_finetune.errors import (
    BackupDamaged,
    BackupPasswordError,
    BackupPermissionDenied,
    BackupUnsupported,
    BackupWithoutMessages,
    NotABackup,
)
from imessage_finetune.fixtures.ios_backup import (
    ADDRESSBOOK,
    SMS,
    Device,
    Encryption,
    write_backup,
)
from imessage_finetune.snapshot import read_contacts
from imessage_finetune.sources.ios_backup import (
    PASSWORD_ENV,
    default_backup_roots,
    extracted_backup,
    find_backups,
    password_provider,
    read_backup_info,
    read_ios_contacts,
    watched_files,
)
from imessage_finetune.sources.ios_backup.folder import file_id

GIVEN = password_provider(None, environ={PASSWORD_ENV: PASSWORD})


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory):
    return phone_history(tmp_path_factory.mktemp("phone"))


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


def test_encrypted_backup_content_is_not_readable_without_the_key(tmp_path: Path, history) -> None:
    """The encrypting side really encrypts: no SQLite header or text in the stored files."""
    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    stored = (backup / "Manifest.db").read_bytes() + (backup / file_id(*SMS)[:2] / file_id(*SMS)).read_bytes()
    assert b"SQLite format 3" not in stored and b"hatter" not in stored


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


def test_backup_info_and_listing(tmp_path: Path, history) -> None:
    """Device name, iOS version, date and encryption come from the plists; newest first;
    folders that are not backups are skipped, a damaged one is listed as such."""
    root = tmp_path / "Backup"
    older = make_backup(root / "00008030-AAAA", history, device=Device(name="Old phone", ios_version="16.7.10"),
                        date=dt.datetime(2024, 5, 2, 8, 0, tzinfo=dt.timezone.utc))
    newer = make_backup(root / "00008130-BBBB", history, encrypted=True)
    (root / "not-a-backup").mkdir()
    (root / "damaged").mkdir()
    (root / "damaged" / "Manifest.plist").write_bytes(b"garbage")
    found = find_backups([root])
    assert [b.path for b in found] == [newer, older, root / "damaged"]
    assert (found[0].device_name, found[0].ios_version, found[0].encrypted) == ("Ana’s iPhone", "18.5", True)
    assert found[0].date == dt.datetime(2025, 3, 1, 14, 22, 5, tzinfo=dt.timezone.utc)
    assert (found[1].device_name, found[1].ios_version, found[1].encrypted) == ("Old phone", "16.7.10", False)
    assert "damaged" in found[2].problem
    assert find_backups([newer]) == [read_backup_info(newer)]  # a backup given itself
    assert find_backups([tmp_path / "absent"]) == []


def test_usual_backup_folders_per_system(tmp_path: Path) -> None:
    """macOS: MobileSync under Application Support; Windows: both iTunes locations; Linux: none."""
    assert default_backup_roots("darwin", {}, tmp_path) == [
        tmp_path / "Library" / "Application Support" / "MobileSync" / "Backup"
    ]
    env = {"APPDATA": str(tmp_path / "Roaming"), "USERPROFILE": str(tmp_path / "ana")}
    assert default_backup_roots("win32", env) == [
        tmp_path / "Roaming" / "Apple Computer" / "MobileSync" / "Backup",
        tmp_path / "ana" / "Apple" / "MobileSync" / "Backup",
    ]
    assert default_backup_roots("linux", env) == []


def test_watched_files_are_the_manifest_and_the_databases_by_file_id(tmp_path: Path) -> None:
    """Staleness needs no password: the files are found by their fixed file IDs."""
    names = [p.name for p in watched_files(tmp_path, contacts=True)]
    assert names[:2] == ["Manifest.plist", "Manifest.db"]
    assert "3d0d7e5fb2ce288813306e4d4636395e047a3d28" in names  # chatdb.md §8
    assert len(watched_files(tmp_path, contacts=False)) == 4


# --- bad input ---------------------------------------------------------------------------


def extract(backup: Path, tmp_path: Path, password=GIVEN) -> None:
    work = work_folder(tmp_path)
    try:
        with extracted_backup(backup, work, password):
            pass
    finally:
        assert list(work.iterdir()) == [], "the private folder was left behind"


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


def test_password_comes_from_the_file_then_the_environment_then_the_question(tmp_path: Path, history) -> None:
    """The file wins over the environment, which wins over asking; the file's final newline is
    not part of the password, but its spaces are."""
    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    info = read_backup_info(backup)
    secret = tmp_path / "password.txt"
    secret.write_text(" spaced \r\n", encoding="utf-8")
    env = {PASSWORD_ENV: "from env"}
    asked: list[str] = []

    def ask(_: object) -> str:
        asked.append("asked")
        return "typed"

    assert password_provider(secret, ask, env)(info).value == " spaced "
    assert password_provider(None, ask, env)(info).value == "from env"
    assert password_provider(None, ask, {})(info).value == "typed" and asked == ["asked"]
    assert "spaced" not in repr(password_provider(secret)(info))
    secret.write_text("\n", encoding="utf-8")
    with pytest.raises(BackupPasswordError, match="is empty"):
        password_provider(secret)(info)
    with pytest.raises(BackupPasswordError, match="does not exist"):
        password_provider(tmp_path / "absent.txt")(info)


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


def test_unreadable_backup_on_macos_asks_for_full_disk_access(
    tmp_path: Path, history, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS refuses the MobileSync folder without Full Disk Access: the error says so."""
    backup = make_backup(tmp_path / "backup", history)
    monkeypatch.setattr("sys.platform", "darwin")
    monkeypatch.setenv("TERM_PROGRAM", "Apple_Terminal")
    real_scandir = __import__("os").scandir

    def denied(path):  # what macOS does to a process without Full Disk Access
        if Path(path) == backup:
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_scandir(path)

    monkeypatch.setattr("os.scandir", denied)
    with pytest.raises(BackupPermissionDenied, match="MobileSync folder .* grant Full Disk Access to Terminal"):
        extract(backup, tmp_path)
    with pytest.raises(BackupPermissionDenied, match="Full Disk Access"):
        monkeypatch.setattr(Path, "iterdir", lambda self: (_ for _ in ()).throw(PermissionError(1, "denied")))
        find_backups([tmp_path / "MobileSync"])


def test_backup_info_is_frozen_and_secret_free() -> None:
    """Password values never show in a repr (they could reach a log or a traceback)."""
    from imessage_finetune.sources.ios_backup import Password

    assert "hunter2" not in repr(Password("hunter2", "the terminal"))
    assert dataclasses.is_dataclass(Password)
