"""The command line on backups: `backups` lists them, `conversations` and `diagnose` read one
like its chat.db, and the password is asked on a terminal.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from ios_backup_builder import (
    ALICE,
    PASSWORD,
    make_backup,
    project,
)

from imessage_finetune.cli import cli
from imessage_finetune.fixtures.ios_backup import Device
from imessage_finetune.sources.ios_backup import PASSWORD_ENV

CLI = [sys.executable, "-c", "from imessage_finetune.cli import main; main()"]


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


def test_reading_a_backup_waits_for_a_build_of_the_same_folder(tmp_path: Path, history) -> None:
    """The backup's copy goes into the artifacts folder, whose build removes what it takes for
    a killed run's files: `conversations` takes the build lock, waits for a running build, and
    gives up after [artifacts] lock_timeout with one line, leaving the folder as it was."""
    from imessage_finetune.pipeline import run_lock

    backup = make_backup(tmp_path / "backup", history)
    config = project(tmp_path, backup)
    config.write_text(config.read_text(encoding="utf-8") + "lock_timeout = 0.5\n", encoding="utf-8")
    build = run_lock.RunLock(tmp_path / "out")
    build.acquire(0, print)
    try:
        before = sorted(p.name for p in (tmp_path / "out").iterdir())
        waited = CliRunner().invoke(cli, ["--config", str(config), "conversations"])
        assert waited.exit_code == 1, waited.output
        assert waited.stderr.splitlines()[-1].startswith(f"Error: another build of {tmp_path / 'out'} is still running")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before
    finally:
        build.release()
    done = CliRunner().invoke(cli, ["--config", str(config), "conversations"])
    assert done.exit_code == 0 and "Alice Liddell" in done.stdout, done.output
    assert not (tmp_path / "out").exists()  # the lock made the folder and left it empty: removed


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
