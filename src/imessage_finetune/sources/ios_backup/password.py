"""Where the password of an encrypted backup comes from: a file, the environment, or a question.

In that order: the file named by `[source] backup_password_file`, the environment variable
`IMESSAGE_FINETUNE_BACKUP_PASSWORD`, then `ask` (the command line passes one that prompts on
a terminal; library code never prompts). The value lives only in memory: it is never part of
a stage's parameters, a log line, an error or an artifact.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from imessage_finetune.errors import BackupPasswordError
from imessage_finetune.sources.ios_backup.extract import PASSWORD_HELP, Password, PasswordProvider
from imessage_finetune.sources.ios_backup.folder import BackupInfo

PASSWORD_ENV = "IMESSAGE_FINETUNE_BACKUP_PASSWORD"

# Asked with the backup being opened; returns the password, or None when it cannot ask.
Asker = Callable[[BackupInfo], "str | None"]


def read_password_file(path: Path) -> str:
    """The password in a file: its text without the final line ending (spaces are kept) and
    without the byte-order mark Windows editors may put first."""
    key = "[source] backup_password_file"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BackupPasswordError(f"the password file {path} ({key}) does not exist") from None
    except IsADirectoryError:
        raise BackupPasswordError(f"the password file {path} ({key}) is a folder, not a file") from None
    except PermissionError:
        raise BackupPasswordError(f"permission denied reading the password file {path} ({key})") from None
    except UnicodeDecodeError:
        raise BackupPasswordError(f"the password file {path} ({key}) is not UTF-8 text") from None
    for ending in ("\r\n", "\n", "\r"):
        if text.endswith(ending):
            text = text[: -len(ending)]
            break
    if not text:
        raise BackupPasswordError(f"the password file {path} ({key}) is empty")
    return text


def password_provider(
    password_file: Path | None,
    ask: Asker | None = None,
    environ: Mapping[str, str] | None = None,
) -> PasswordProvider:
    """A provider that finds the password only when an encrypted backup needs one."""

    def provide(info: BackupInfo) -> Password:
        env = os.environ if environ is None else environ
        if password_file is not None:
            return Password(
                read_password_file(password_file), f"the file {password_file} ([source] backup_password_file)"
            )
        if env.get(PASSWORD_ENV):
            return Password(env[PASSWORD_ENV], f"the environment variable {PASSWORD_ENV}")
        answer = ask(info) if ask is not None else None
        if answer:
            return Password(answer, "the terminal")
        raise BackupPasswordError(f"{info.path} is an encrypted backup: {PASSWORD_HELP}")

    return provide
