"""An encrypted backup's password: from the file, the environment or a question, never shown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from ios_backup_builder import make_backup

from imessage_finetune.errors import (
    BackupPasswordError,
)
from imessage_finetune.sources.ios_backup import (
    PASSWORD_ENV,
    password_provider,
    read_backup_info,
)


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
    secret.write_bytes(b"\xef\xbb\xbf spaced \r\n")  # Notepad's "UTF-8 with BOM"
    assert password_provider(secret, ask, env)(info).value == " spaced "
    assert password_provider(None, ask, env)(info).value == "from env"
    assert password_provider(None, ask, {})(info).value == "typed" and asked == ["asked"]
    assert "spaced" not in repr(password_provider(secret)(info))
    secret.write_text("\n", encoding="utf-8")
    with pytest.raises(BackupPasswordError, match="is empty"):
        password_provider(secret)(info)
    with pytest.raises(BackupPasswordError, match="does not exist"):
        password_provider(tmp_path / "absent.txt")(info)


def test_backup_info_is_frozen_and_secret_free() -> None:
    """Password values never show in a repr (they could reach a log or a traceback)."""
    from imessage_finetune.sources.ios_backup import Password

    assert "hunter2" not in repr(Password("hunter2", "the terminal"))
    assert dataclasses.is_dataclass(Password)
