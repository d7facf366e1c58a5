"""A backup folder's description (Info.plist, Manifest.plist, Status.plist), the usual places
backups are kept, listing them, and a folder macOS guards.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from ios_backup_builder import PASSWORD, make_backup

from imessage_finetune.errors import (
    BackupPermissionDenied,
)
from imessage_finetune.fixtures.ios_backup import (
    Device,
)
from imessage_finetune.sources.ios_backup import (
    PASSWORD_ENV,
    default_backup_roots,
    extracted_backup,
    find_backups,
    password_provider,
    read_backup_info,
)

GIVEN = password_provider(None, environ={PASSWORD_ENV: PASSWORD})


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
