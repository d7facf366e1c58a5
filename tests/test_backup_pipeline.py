"""An iPhone backup as `[source] path`: the pipeline, the command line, and bad input.

The reference is the pipeline on the chat.db the backup holds (with the same people in a
macOS Contacts database): a backup must give the same sessions.json, byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ios_backup_builder import ALICE, PASSWORD, make_backup, phone_history, project, tree_digest
from pipeline_runner import run_doit
from imessage_finetune import artifacts
from imessage_finetune.cli import cli
from imessage_finetune.fixtures.ios_backup import Device, write_backup
from imessage_finetune.sources.ios_backup import PASSWORD_ENV

CLI = [sys.executable, "-c", "from imessage_finetune.cli import main; main()"]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory):
    return phone_history(tmp_path_factory.mktemp("phone"))


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


# --- bad input: one line, exit non-zero, nothing written -----------------------------------


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


# --- the command line ------------------------------------------------------------------


def test_backups_lists_the_backups_in_a_folder(tmp_path: Path, history) -> None:
    root = tmp_path / "MobileSync" / "Backup"
    make_backup(root / "00008130-001A2B3C4D5E6F70", history, encrypted=True)
    make_backup(root / "00008030-0000AAAA", history, device=Device(name="iPad de Léa", ios_version="17.7", product_type="iPad13,1"))
    result = CliRunner().invoke(cli, ["backups", "--path", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "IOS", "DATE", "(UTC)", "ENCRYPTED", "FOLDER"]
    assert lines[1].startswith("Ana’s iPhone") and "18.5" in lines[1] and "2025-03-01 14:22" in lines[1]
    assert lines[1].split()[-2:] == ["yes", str(root / "00008130-001A2B3C4D5E6F70")]
    assert lines[2].startswith("iPad de Léa") and lines[2].split()[-2:] == ["no", str(root / "00008030-0000AAAA")]
    assert "2 backup(s)" in result.stderr
    listed = json.loads(CliRunner().invoke(cli, ["backups", "--path", str(root), "--json"]).stdout)
    assert [(b["device_name"], b["ios_version"], b["encrypted"], b["date"]) for b in listed] == [
        ("Ana’s iPhone", "18.5", True, "2025-03-01T14:22:05+00:00"),
        ("iPad de Léa", "17.7", False, "2025-03-01T14:22:05+00:00"),
    ]
    missing = CliRunner().invoke(cli, ["backups", "--path", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: ") and "not found" in missing.stderr


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_conversations_and_diagnose_read_a_backup_like_its_chat_db(tmp_path: Path, history, encrypted: bool) -> None:
    """The same conversations (names from the backup's own Contacts) and the same diagnosis."""
    backup = make_backup(tmp_path / "backup", history, encrypted=encrypted)
    from_backup = project(tmp_path / "b", backup)
    from_mac = project(tmp_path / "m", history.chat_db, contacts=f'"{history.mac_addressbook.as_posix()}"')
    runner = CliRunner(env={PASSWORD_ENV: PASSWORD})
    for command in (["conversations", "--json"], ["diagnose", "--json"]):
        mine = runner.invoke(cli, ["--config", str(from_backup), *command])
        assert mine.exit_code == 0, mine.output
        theirs = json.loads(runner.invoke(cli, ["--config", str(from_mac), *command]).stdout)
        got = json.loads(mine.stdout)
        if command[0] == "diagnose":
            assert got.pop("path") == str(backup)
            theirs.pop("path")
        assert got == theirs
    names = json.loads(runner.invoke(cli, ["--config", str(from_backup), "conversations", "--json"]).stdout)
    assert ["Alice Liddell"] in [c["participants"] for c in names]
    assert not list((tmp_path / "b" / "out").glob(".ios-backup*"))


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_password_is_asked_on_a_terminal_without_echo(tmp_path: Path, history) -> None:
    """No file, no variable, but a terminal: the command asks, the typed password is not echoed."""
    import pty
    import select

    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    config = project(tmp_path, backup)
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, with the pseudo-terminal as its terminal
        os.execve(sys.executable, [*CLI, "--config", str(config), "conversations"], env)
    seen = b""

    def read_until(marker: bytes, seconds: float = 60) -> None:
        nonlocal seen
        import time

        deadline = time.monotonic() + seconds
        while marker not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    return

    read_until(b"Password of the encrypted backup of Ana\xe2\x80\x99s iPhone")
    os.write(fd, PASSWORD.encode() + b"\n")
    read_until(b"conversations,")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert b"Alice Liddell" in seen and PASSWORD.encode() not in seen
    assert ALICE.encode() in seen


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_decrypted_files_of_a_killed_run_are_removed_by_the_next_run(tmp_path: Path, history) -> None:
    """Killed while the decrypted sms.db sits in the artifacts folder: the next run removes it."""
    backup = make_backup(tmp_path / "backup", history, encrypted=True)
    config = encrypted_project(tmp_path, backup)
    killed = run_doit(config, "snapshot", fault="imessage_finetune.backup_snapshot:take_snapshot:1:sigkill")
    assert killed["exit"] == "-9"
    (left,) = (tmp_path / "out").glob(".ios-backup*")
    assert (left / "sms.db").is_file()  # plaintext, in the private folder only
    assert run_doit(config, "snapshot")["snapshot"] == "success"
    assert not list((tmp_path / "out").glob(".ios-backup*"))
