"""The snapshot stage on an iPhone backup: the same sessions.json as from the chat.db the backup
holds (with the same people in a macOS Contacts database), staleness, and bad input (one line,
exit non-zero, nothing written).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ios_backup_builder import (
    PASSWORD,
    make_backup,
    phone_history,
    project,
    tree_digest,
)
from pipeline_runner import run_doit

from imessage_finetune import artifacts
from imessage_finetune.fixtures.ios_backup import write_backup
from imessage_finetune.sources.ios_backup import PASSWORD_ENV

CLI = [sys.executable, "-c", "from imessage_finetune.cli import main; main()"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, history) -> Path:
    """The artifacts folder of the pipeline run on the chat.db itself, with macOS Contacts."""
    folder = tmp_path_factory.mktemp("reference")
    config = project(folder, history.chat_db, contacts=f'"{history.mac_addressbook.as_posix()}"')
    assert run_doit(config, "sessions")["sessions"] == "success"
    return folder / "out"


def encrypted_project(folder: Path, backup: Path) -> Path:
    secret = folder / "backup-password.txt"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    return project(folder, backup, extra=f'backup_password_file = "{secret.name}"\n')


def every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_sessions_from_a_backup_equal_those_from_the_chat_db_it_holds(
    tmp_path: Path, history, reference: Path, encrypted: bool
) -> None:
    """Same sessions.json and contacts.json as from chat.db + macOS Contacts; the backup's
    bytes are unchanged; the password is in no artifact, state file or output; the decrypted
    copies are gone."""
    backup = make_backup(tmp_path / "backup", history, encrypted=encrypted)
    before = tree_digest(backup)
    config = encrypted_project(tmp_path, backup) if encrypted else project(tmp_path, backup)
    results = run_doit(config, "sessions")
    assert results == {"snapshot": "success", "sessions": "success", "exit": "0"}, results.stderr
    out = tmp_path / "out"
    for artifact in (artifacts.SESSIONS, artifacts.CONTACTS):
        assert artifact.path(out).read_bytes() == artifact.path(reference).read_bytes(), artifact.filename
    assert "from the backup of Ana’s iPhone (iOS 18.5, backed up 2025-03-01 14:22 UTC)" in results.stderr
    assert tree_digest(backup) == before
    assert not list(out.glob(".ios-backup*")), "decrypted files were left behind"
    assert PASSWORD.encode() not in every_byte(out) and PASSWORD not in results.stderr


def test_a_newer_backup_rebuilds_the_snapshot_and_an_unchanged_one_nothing(tmp_path: Path, history) -> None:
    """Up to date after a run; the same backup written again (new mtimes, same bytes) changes
    nothing; a later backup of the same phone with a new message rebuilds."""
    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    config = project(tmp_path, backup)
    env = {PASSWORD_ENV: PASSWORD}
    assert run_doit(config, "sessions", env=env)["snapshot"] == "success"
    make_backup(tmp_path / "backup", history, encrypted=True)
    assert run_doit(config, "sessions", env=env) == {"snapshot": "up-to-date", "sessions": "up-to-date", "exit": "0"}
    newer = phone_history(tmp_path / "phone", extra_message="why is a raven like a writing desk?")
    import datetime as dt

    make_backup(tmp_path / "backup", newer, encrypted=True, date=dt.datetime(2025, 4, 1, tzinfo=dt.timezone.utc))
    results = run_doit(config, "sessions", env=env)
    assert results == {"snapshot": "success", "sessions": "success", "exit": "0"}, results.stderr
    assert "why is a raven" in artifacts.SESSIONS.path(tmp_path / "out").read_text(encoding="utf-8")


def not_a_backup(folder: Path, history) -> Path:
    (folder / "Pictures").mkdir()
    return folder / "Pictures"


def icloud_only(folder: Path, history) -> Path:
    return write_backup(folder / "backup", {k: v for k, v in history.files.items() if "SMS" not in k[1]})


def truncated_manifest(folder: Path, history) -> Path:
    backup = make_backup(folder / "backup", history)
    (backup / "Manifest.db").write_bytes((backup / "Manifest.db").read_bytes()[:8192])
    return backup


def encrypted(folder: Path, history) -> Path:
    return make_backup(folder / "backup", history, encrypted=True)


BAD_INPUTS = [
    (not_a_backup, "is a folder but not an iPhone or iPad backup"),
    (icloud_only, "holds no messages: it has no HomeDomain Library/SMS/sms.db; that is how a backup looks when the phone keeps its messages in iCloud"),
    (truncated_manifest, r"Manifest\.db is truncated \(8192 of "),
    (encrypted, f"wrong password for the encrypted backup .*; it came from the environment variable {PASSWORD_ENV}"),
]


def assert_one_line_failure(done: subprocess.CompletedProcess[str], pattern: str, out: Path) -> None:
    import re

    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in (done.stderr + done.stdout).splitlines() if re.search(pattern, line)]
    assert len(lines) == 1, done.stderr + done.stdout
    written = [p.name for p in out.rglob("*")] if out.exists() else []
    assert not set(written) - {artifacts.STATE_FILE}, written


@pytest.mark.parametrize(("make", "pattern"), BAD_INPUTS, ids=[m.__name__ for m, _ in BAD_INPUTS])
@pytest.mark.parametrize("command", [["run", "sessions"], ["conversations"]], ids=["run", "conversations"])
def test_bad_backup_is_one_line_and_writes_nothing(tmp_path: Path, history, make, pattern: str, command: list[str]) -> None:
    source = make(tmp_path, history)
    before = tree_digest(source)
    config = project(tmp_path, source)
    env = {**os.environ, PASSWORD_ENV: "not the password"}
    done = subprocess.run([*CLI, "--config", str(config), *command], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert_one_line_failure(done, pattern, tmp_path / "out")
    assert tree_digest(source) == before


@pytest.mark.skipif(sys.platform == "win32", reason="file modes do not make a folder unreadable on Windows")
def test_unreadable_backup_folder_is_one_line_and_writes_nothing(tmp_path: Path, history) -> None:
    """A folder the user may not read (root is stripped of the capabilities that bypass modes)."""
    backup = make_backup(tmp_path / "backup", history)
    config = project(tmp_path, backup)
    command = [*CLI, "--config", str(config), "run", "sessions"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a folder unreadable")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    backup.chmod(0)
    try:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    finally:
        backup.chmod(0o755)
    assert_one_line_failure(done, f"permission denied reading {backup}: check that your user account may read it", tmp_path / "out")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_decrypted_files_of_a_killed_run_are_removed_by_the_next_run(tmp_path: Path, history) -> None:
    """Killed while the decrypted sms.db sits in the artifacts folder: the next run removes it."""
    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    config = encrypted_project(tmp_path, backup)
    killed = run_doit(config, "snapshot", fault="imessage_finetune.stages.snapshot:take_snapshot:1:sigkill")
    assert killed["exit"] == "-9"
    (left,) = (tmp_path / "out").glob(".ios-backup*")
    assert (left / "sms.db").is_file()  # plaintext, in the private folder only
    assert run_doit(config, "snapshot")["snapshot"] == "success"
    assert not list((tmp_path / "out").glob(".ios-backup*"))
