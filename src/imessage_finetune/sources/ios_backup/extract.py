"""Taking the Messages and Contacts databases out of a backup, into a private folder.

Only the files the pipeline needs leave the backup: `Manifest.db` (to find them),
`Library/SMS/sms.db` and `Library/AddressBook/AddressBook.sqlitedb` (each with its `-wal`
when the backup has one). They are copied, or decrypted for an encrypted backup, into a
private folder the caller names (the artifacts folder: never the system's temporary folder),
which is removed afterwards; a killed run's folder is named like any temporary file of the
pipeline (`.ios-backup.tmp-…`) and removed by the next run. The backup itself is only read.

Encrypted backups are decrypted with iphone-backup-decrypt's building blocks (keybag, key
unwrapping, chunked AES-CBC), not its `EncryptedBackup` class: that class decrypts
Manifest.db into the system's temporary folder and prints to stdout.
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from imessage_finetune.atomic import TEMP_MARKER
from imessage_finetune.errors import (
    BackupDamaged,
    BackupPasswordError,
    BackupUnsupported,
    BackupWithoutMessages,
)
from imessage_finetune.sources.chatdb.schema import REQUIRED_TABLES
from imessage_finetune.sources.ios_backup.folder import (
    ADDRESSBOOK_DB,
    HOME_DOMAIN,
    LEGACY_MANIFEST,
    MANIFEST_DB,
    MANIFEST_PLIST,
    SMS_DB,
    BackupInfo,
    blob_path,
    denied,
    file_id,
    read_backup_info,
    read_plist,
)

WORK_PREFIX = f".ios-backup{TEMP_MARKER}"
SQLITE_MAGIC = b"SQLite format 3\x00"
WAL = "-wal"
FILE_FLAG = 1  # Files.flags: 1 file, 2 folder, 4 symbolic link

ICLOUD_ADVICE = (
    "that is how a backup looks when the phone keeps its messages in iCloud only (Messages in "
    "iCloud). On the phone, turn off syncing in Settings > your name > iCloud > Messages in "
    "iCloud and choose to download the messages, wait until they are on the phone, then back it "
    "up again; or set [source] path to ~/Library/Messages/chat.db on a Mac signed in to Messages "
    "with the same Apple ID"
)


@dataclass(frozen=True)
class Password:
    """A backup password and where it came from (the value is never shown, logged or saved)."""

    value: str = field(repr=False)
    origin: str


PasswordProvider = Callable[[BackupInfo], Password]


@dataclass(frozen=True)
class ExtractedBackup:
    """The databases taken out of a backup, in a private folder that lives as long as the block."""

    info: BackupInfo
    sms_db: Path
    addressbook: Path | None


def decryptor_version() -> str:
    """The installed iphone-backup-decrypt's version, for messages."""
    try:
        return version("iphone-backup-decrypt")
    except PackageNotFoundError:
        return "(not installed)"


def watched_files(backup: Path, *, contacts: bool) -> list[Path]:
    """The files of a backup whose bytes decide whether its snapshot is stale.

    A new backup of the device rewrites Manifest.db and Manifest.plist; the databases'
    own files are named by their fixed file IDs, so no decryption is needed to find them.
    """
    backup = Path(backup)
    paths = [backup / MANIFEST_PLIST, backup / MANIFEST_DB]
    wanted = [SMS_DB, SMS_DB + WAL] + ([ADDRESSBOOK_DB, ADDRESSBOOK_DB + WAL] if contacts else [])
    return paths + [blob_path(backup, file_id(HOME_DOMAIN, path)) for path in wanted]


@contextmanager
def extracted_backup(
    backup: Path,
    work_parent: Path,
    password: PasswordProvider | None,
    *,
    contacts: bool = True,
) -> Iterator[ExtractedBackup]:
    """Take sms.db (and AddressBook.sqlitedb when `contacts`) out of a backup for one block.

    `work_parent` must be a private folder (the artifacts folder); the files are removed
    when the block ends. `password` is asked only for an encrypted backup. Every problem is
    a BackupError (or subclass of ChatDbError) whose one line says what to do.
    """
    info = read_backup_info(Path(backup))
    _check_format(info)
    work = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=work_parent))
    try:
        yield _extract(info, work, password, contacts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_format(info: BackupInfo) -> None:
    manifest_db = info.path / MANIFEST_DB
    if not manifest_db.is_file():
        if (info.path / LEGACY_MANIFEST).is_file():
            raise BackupUnsupported(
                f"{info.path} was made by {info.ios}, which lists its files in {LEGACY_MANIFEST}; "
                "imessage-finetune reads backups made by iOS 10 or later: update the phone and "
                "back it up again"
            )
        raise BackupDamaged(
            f"{info.path} has no {MANIFEST_DB}: the backup is incomplete (it may have been "
            "interrupted); make a new backup"
        )


def _extract(info: BackupInfo, work: Path, password: PasswordProvider | None, contacts: bool) -> ExtractedBackup:
    reader: _PlainReader = _EncryptedReader(info, password) if info.encrypted else _PlainReader(info)
    manifest = reader.manifest(work / MANIFEST_DB)
    wanted = [SMS_DB, SMS_DB + WAL] + ([ADDRESSBOOK_DB, ADDRESSBOOK_DB + WAL] if contacts else [])
    rows = _lookup(info, manifest, wanted)
    if SMS_DB not in rows:
        raise BackupWithoutMessages(
            f"{info.path} ({_device(info)}) holds no messages: it has no {HOME_DOMAIN} {SMS_DB}; {ICLOUD_ADVICE}"
        )
    sms_db = _take_database(reader, rows, SMS_DB, work / "sms.db")
    if _message_count(info, sms_db) == 0:
        raise BackupWithoutMessages(
            f"{info.path} ({_device(info)}) holds no messages: its {SMS_DB} is empty; {ICLOUD_ADVICE}"
        )
    addressbook = None
    if ADDRESSBOOK_DB in rows:
        addressbook = _take_database(reader, rows, ADDRESSBOOK_DB, work / "AddressBook.sqlitedb")
    return ExtractedBackup(info=info, sms_db=sms_db, addressbook=addressbook)


def _device(info: BackupInfo) -> str:
    return ", ".join(part for part in (info.device_name, info.ios) if part)


@dataclass(frozen=True)
class _Row:
    file_id: str
    relative_path: str
    file: bytes


def _lookup(info: BackupInfo, manifest: Path, wanted: list[str]) -> dict[str, _Row]:
    """Files table rows of the wanted HomeDomain files (regular files only)."""
    marks = ", ".join("?" for _ in wanted)
    sql = f"SELECT fileID, relativePath, file FROM Files WHERE domain = ? AND flags = ? AND relativePath IN ({marks})"
    try:
        conn = sqlite3.connect(manifest)
        try:
            found = conn.execute(sql, (HOME_DOMAIN, FILE_FLAG, *wanted)).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupDamaged(
            f"{info.path / MANIFEST_DB} is damaged ({exc}): the backup may have been interrupted; make a new backup"
        ) from None
    rows = {}
    for identifier, relative_path, blob in found:
        rows[str(relative_path)] = _Row(str(identifier), str(relative_path), bytes(blob or b""))
    return rows


def _take_database(reader: _PlainReader, rows: dict[str, _Row], relative_path: str, target: Path) -> Path:
    """Copy or decrypt a database and its -wal, and make the copy one self-contained file."""
    reader.take(rows[relative_path], target)
    if relative_path + WAL in rows:
        reader.take(rows[relative_path + WAL], target.with_name(target.name + WAL))
    label = f"the backup's {relative_path} (file {rows[relative_path].file_id})"
    _check_complete(target, label)
    try:
        # Our own private copy: opening it writable replays its WAL, and DELETE mode folds the
        # WAL into the main file, so readers downstream see one file with every row.
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = DELETE").fetchone()
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupDamaged(f"{label} is damaged ({exc}): make a new backup") from None
    return target


def _message_count(info: BackupInfo, sms_db: Path) -> int:
    """Rows in `message`, after checking that the file is a Messages database."""
    conn = sqlite3.connect(sms_db)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [table for table in REQUIRED_TABLES if table not in tables]
        if missing:
            raise BackupDamaged(
                f"the {SMS_DB} in {info.path} is not a Messages database (it has no "
                f"{', '.join(missing)} table): the backup is damaged or not a phone's; make a new backup"
            )
        return int(conn.execute("SELECT count(*) FROM message").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupDamaged(f"the {SMS_DB} in {info.path} is damaged ({exc}): make a new backup") from None
    finally:
        conn.close()


def _check_complete(path: Path, label: str) -> None:
    """A SQLite file whose header promises more pages than it has was cut short.

    SQLite keeps the database size in pages at header offset 28, valid when the "version
    valid for" number (offset 92) equals the change counter (offset 24). A truncated file
    may still open and answer a query whose pages survived, so the size is checked first.
    """
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise BackupDamaged(f"{label} is damaged (not a SQLite database): make a new backup")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if pages and header[24:28] == header[92:96] and path.stat().st_size < pages * page_size:
        raise BackupDamaged(
            f"{label} is truncated ({path.stat().st_size} of {pages * page_size} bytes): the backup "
            "may have been interrupted; make a new backup"
        )


class _PlainReader:
    """An unencrypted backup: files are stored as they are on the phone."""

    def __init__(self, info: BackupInfo) -> None:
        self.info = info

    def manifest(self, target: Path) -> Path:
        """A private copy of Manifest.db, checked to be whole."""
        self._copy(self.info.path / MANIFEST_DB, target)
        _check_complete(target, str(self.info.path / MANIFEST_DB))
        return target

    def take(self, row: _Row, target: Path) -> None:
        """Put one backed-up file's content at `target`."""
        self._copy(self._blob(row), target)

    def _blob(self, row: _Row) -> Path:
        path = blob_path(self.info.path, row.file_id)
        if not path.is_file():
            raise BackupDamaged(
                f"{self.info.path} lists {row.relative_path} but its file {row.file_id[:2]}/{row.file_id} "
                "is missing: the backup is incomplete; make a new backup"
            )
        return path

    def _copy(self, source: Path, target: Path) -> None:
        try:
            shutil.copyfile(source, target)
        except PermissionError:
            raise denied(source) from None
        except FileNotFoundError:
            raise BackupDamaged(f"{source} is missing: the backup is incomplete; make a new backup") from None


class _EncryptedReader(_PlainReader):
    """An encrypted backup: the keybag in Manifest.plist, unlocked by the password, holds the
    class keys; each file's own key, wrapped with its class key, is in its Manifest.db record;
    Manifest.db itself is encrypted with `ManifestKey`. Content is AES-256-CBC, zero IV."""

    def __init__(self, info: BackupInfo, password: PasswordProvider | None) -> None:
        super().__init__(info)
        from iphone_backup_decrypt import utils

        self._utils = utils
        manifest = read_plist(info.path / MANIFEST_PLIST)
        try:
            keybag_bytes = manifest["BackupKeyBag"]
            manifest_key = manifest["ManifestKey"]
            self._manifest_class = struct.unpack("<l", manifest_key[:4])[0]
            self._manifest_key = manifest_key[4:]
            self.keybag = utils.BackupKeyBag(keybag_bytes)
            for tag in (b"DPSL", b"DPIC", b"SALT", b"ITER"):
                if tag not in self.keybag.attrs:
                    raise KeyError(f"its keybag has no {tag.decode()}")
        except KeyError as exc:
            detail = str(exc).strip("'\"")
            raise self._unsupported(detail if detail.startswith("its ") else f"no {detail}") from None
        except (ValueError, TypeError, struct.error) as exc:
            raise self._unsupported(exc) from None
        if password is None:
            raise BackupPasswordError(f"{info.path} ({_device(info)}) is encrypted: {PASSWORD_HELP}")
        given = password(info)
        try:
            unlocked = self.keybag.unlock_with_passphrase(given.value.encode("utf-8"))
        except ValueError as exc:  # iteration counts outside what the library accepts
            raise self._unsupported(exc) from None
        if not unlocked:
            raise BackupPasswordError(
                f"wrong password for the encrypted backup {info.path} ({_device(info)}); it came from {given.origin}"
            )

    def _unsupported(self, exc: BaseException | str) -> BackupUnsupported:
        detail = str(exc) or type(exc).__name__
        return BackupUnsupported(
            f"{self.info.path} was made by {self.info.ios}, whose backup encryption "
            f"iphone-backup-decrypt {decryptor_version()} does not know ({detail}); look for a "
            "newer imessage-finetune, or make an unencrypted backup"
        )

    def _unwrap(self, protection_class: int, wrapped: bytes) -> bytes:
        try:
            return bytes(self.keybag.unwrap_key_for_class(protection_class, wrapped))
        except ValueError as exc:
            raise self._unsupported(exc) from None

    def _decrypt(self, source: Path, key: bytes, target: Path, what: str) -> None:
        try:
            self._utils.aes_decrypt_chunked(in_filename=str(source), key=key, out_filepath=str(target))
        except PermissionError:
            raise denied(source) from None
        except FileNotFoundError:
            raise BackupDamaged(f"{source} is missing: the backup is incomplete; make a new backup") from None
        except ValueError as exc:
            raise BackupDamaged(
                f"{what} does not decrypt ({exc}): the backup is damaged or was interrupted; make a new backup"
            ) from None

    def manifest(self, target: Path) -> Path:
        """Manifest.db, decrypted into the private folder."""
        source = self.info.path / MANIFEST_DB
        key = self._unwrap(self._manifest_class, self._manifest_key)
        self._decrypt(source, key, target, str(source))
        _check_complete(target, str(source))
        return target

    def take(self, row: _Row, target: Path) -> None:
        """Decrypt one backed-up file to `target`."""
        try:
            record: Any = self._utils.FilePlist(row.file)
            wrapped = record.encryption_key
            protection_class = int(record.protection_class)
        except Exception as exc:  # a record in a shape this reader does not know
            raise self._unsupported(exc) from None
        if wrapped is None:
            raise BackupDamaged(
                f"{self.info.path} has no key for {row.relative_path}: the backup is damaged; make a new backup"
            )
        key = self._unwrap(protection_class, bytes(wrapped))
        self._decrypt(self._blob(row), key, target, f"the backup's {row.relative_path}")


PASSWORD_HELP = (
    "give its password in a file named by [source] backup_password_file, or in the "
    "environment variable IMESSAGE_FINETUNE_BACKUP_PASSWORD, or run the command on a terminal "
    "to be asked for it"
)
