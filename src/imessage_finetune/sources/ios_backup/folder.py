"""What an iPhone or iPad backup folder is, what it says about itself, and where they are kept.

Finder (macOS 10.15+), iTunes (older macOS, Windows) and `idevicebackup2` (libimobiledevice,
Linux) write the same layout, one folder per device named after its identifier (UDID):

* `Info.plist`: the device as the computer saw it (`Device Name`, `Product Version` = iOS
  version, `Product Type`, `Last Backup Date`, `Unique Identifier`);
* `Manifest.plist`: the backup's own record (`IsEncrypted`, `Lockdown` with the device's
  name and iOS version, and for an encrypted backup `BackupKeyBag` and `ManifestKey`);
* `Status.plist`: `SnapshotState` = `finished` once the backup completed;
* `Manifest.db` (iOS 10 and later; `Manifest.mbdb` before): the list of files, table
  `Files(fileID, domain, relativePath, flags, file)`, encrypted as a whole in an encrypted
  backup;
* each file's content under `<fileID[:2]>/<fileID>`, where `fileID` is the SHA-1 of
  `"<domain>-<relativePath>"`.

Nothing here writes to a backup; every read goes through `read_bytes`/`open` for reading.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import plistlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imessage_finetune.errors import BackupDamaged, BackupPermissionDenied, NotABackup

INFO_PLIST = "Info.plist"
MANIFEST_PLIST = "Manifest.plist"
STATUS_PLIST = "Status.plist"
MANIFEST_DB = "Manifest.db"
LEGACY_MANIFEST = "Manifest.mbdb"  # iOS 9 and earlier

HOME_DOMAIN = "HomeDomain"
SMS_DB = "Library/SMS/sms.db"
ADDRESSBOOK_DB = "Library/AddressBook/AddressBook.sqlitedb"

FILE_ID = re.compile(r"[0-9a-f]{40}")

# What to tell a user whose backup folder is not one; shared by every "not a backup" error.
BACKUP_ADVICE = (
    "point [source] path at a backup folder (the one holding Manifest.plist; "
    "`imessage-finetune backups` lists them) or at a chat.db"
)


def file_id(domain: str, relative_path: str) -> str:
    """The name a backup stores a file under: SHA-1 of `domain-relativePath`, in hex."""
    return hashlib.sha1(f"{domain}-{relative_path}".encode()).hexdigest()


def blob_path(backup: Path, identifier: str) -> Path:
    """Where a file's content lives in a backup: `<id[:2]>/<id>` (checked to be a file ID)."""
    if not FILE_ID.fullmatch(identifier):
        raise BackupDamaged(
            f"{backup / MANIFEST_DB} names a file {identifier!r} that is not a backup file ID; "
            "the backup is damaged: make a new one"
        )
    return backup / identifier[:2] / identifier


def permission_hint(platform: str | None = None) -> str:
    """What to do when the system refuses to read a backup folder."""
    platform = sys.platform if platform is None else platform
    if platform == "darwin":
        # Imported here: connection.py belongs to the chat.db reader, and only macOS needs it.
        from imessage_finetune.sources.chatdb.connection import full_disk_access_hint

        return f"macOS protects the MobileSync folder like Messages: {full_disk_access_hint()}"
    return "check that your user account may read it (or copy the backup to a folder you own)"


def denied(path: Path, platform: str | None = None) -> BackupPermissionDenied:
    """The error for a backup file or folder the system refuses to read."""
    return BackupPermissionDenied(f"permission denied reading {path}: {permission_hint(platform)}")


def is_backup(folder: Path) -> bool:
    """True when `folder` looks like a backup (it has Manifest.plist or Manifest.db)."""
    return any((folder / name).is_file() for name in (MANIFEST_PLIST, MANIFEST_DB, INFO_PLIST))


def read_plist(path: Path) -> dict[str, Any]:
    """A property list of a backup as a dict; errors say which file and what to do."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupDamaged(
            f"{path.parent} has no {path.name}: the backup is incomplete (it may have been "
            "interrupted); make a new backup"
        ) from None
    except PermissionError:
        raise denied(path) from None
    try:
        document = plistlib.loads(data)
    except Exception:  # plistlib raises several types for damaged input
        raise BackupDamaged(f"{path} is damaged (not a property list): make a new backup") from None
    if not isinstance(document, dict):
        raise BackupDamaged(f"{path} is damaged (not a dictionary): make a new backup")
    return document


@dataclass(frozen=True)
class BackupInfo:
    """What a backup says about itself, for choosing one and for error messages."""

    path: Path
    device_name: str
    ios_version: str
    product_type: str
    udid: str
    date: dt.datetime | None
    encrypted: bool
    finished: bool
    problem: str = ""

    @property
    def ios(self) -> str:
        """`iOS 17.5.1`, or `an unknown iOS version`."""
        return f"iOS {self.ios_version}" if self.ios_version else "an unknown iOS version"


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    # plistlib returns naive datetimes that are UTC (plist dates are UTC by definition).
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def read_backup_info(folder: Path) -> BackupInfo:
    """Read Info.plist, Manifest.plist and Status.plist of a backup folder.

    Raises NotABackup for a folder without the backup files, BackupPermissionDenied when
    the system refuses to read it, BackupDamaged for an unreadable Manifest.plist.
    """
    folder = Path(folder)
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except FileNotFoundError:
        raise NotABackup(f"{folder} not found; {BACKUP_ADVICE}") from None
    except NotADirectoryError:
        raise NotABackup(f"{folder} is a file, not a backup folder; {BACKUP_ADVICE}") from None
    except PermissionError:
        raise denied(folder) from None
    if not names & {MANIFEST_PLIST, MANIFEST_DB, INFO_PLIST, LEGACY_MANIFEST}:
        raise NotABackup(
            f"{folder} is a folder but not an iPhone or iPad backup (it has no {MANIFEST_PLIST} "
            f"or {MANIFEST_DB}); {BACKUP_ADVICE}"
        )
    manifest = read_plist(folder / MANIFEST_PLIST)
    info = read_plist(folder / INFO_PLIST) if INFO_PLIST in names else {}
    status = read_plist(folder / STATUS_PLIST) if STATUS_PLIST in names else {}
    lockdown = manifest.get("Lockdown")
    lockdown = lockdown if isinstance(lockdown, Mapping) else {}
    return BackupInfo(
        path=folder,
        device_name=_text(info.get("Device Name")) or _text(lockdown.get("DeviceName")),
        ios_version=_text(info.get("Product Version")) or _text(lockdown.get("ProductVersion")),
        product_type=_text(info.get("Product Type")) or _text(lockdown.get("ProductType")),
        udid=_text(info.get("Unique Identifier")) or _text(lockdown.get("UniqueDeviceID")) or folder.name,
        date=_utc(info.get("Last Backup Date")) or _utc(status.get("Date")) or _utc(manifest.get("Date")),
        encrypted=bool(manifest.get("IsEncrypted", False)),
        finished=status.get("SnapshotState", "finished") == "finished",
    )


def default_backup_roots(
    platform: str | None = None, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> list[Path]:
    """The folders Finder and iTunes keep backups in on this system (Linux has none).

    macOS: `~/Library/Application Support/MobileSync/Backup`. Windows: iTunes from Apple's
    site uses `%APPDATA%\\Apple Computer\\MobileSync\\Backup`, iTunes and Apple Devices from
    the Microsoft Store `%USERPROFILE%\\Apple\\MobileSync\\Backup`.
    """
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    if platform == "darwin":
        base = Path.home() if home is None else home
        return [base / "Library" / "Application Support" / "MobileSync" / "Backup"]
    if platform == "win32":
        roots = []
        if environ.get("APPDATA"):
            roots.append(Path(environ["APPDATA"]) / "Apple Computer" / "MobileSync" / "Backup")
        if environ.get("USERPROFILE"):
            roots.append(Path(environ["USERPROFILE"]) / "Apple" / "MobileSync" / "Backup")
        return roots
    return []


def find_backups(roots: list[Path]) -> list[BackupInfo]:
    """The backups in `roots` (each a folder of backups, or a backup itself), newest first.

    A root that does not exist is skipped; one the system refuses to list raises
    BackupPermissionDenied (on macOS that is a missing Full Disk Access). A folder that
    looks like a backup but whose plists are damaged is listed with what could be read.
    """
    found: dict[Path, BackupInfo] = {}
    for root in roots:
        root = Path(root).expanduser()
        if is_backup(root):
            candidates = [root]
        else:
            try:
                candidates = sorted(entry for entry in root.iterdir() if entry.is_dir())
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                raise NotABackup(f"{root} is a file, not a folder of backups") from None
            except PermissionError:
                raise denied(root) from None
        for folder in candidates:
            if folder in found or not is_backup(folder):
                continue
            try:
                found[folder] = read_backup_info(folder)
            except (BackupDamaged, NotABackup) as exc:
                found[folder] = BackupInfo(folder, "", "", "", folder.name, None, False, False, str(exc))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return sorted(found.values(), key=lambda b: (b.date or epoch, str(b.path)), reverse=True)
