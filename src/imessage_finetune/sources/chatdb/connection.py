"""Opening a live Messages (or Contacts) database without ever writing to it.

Messages keeps chat.db open in WAL mode, so the newest rows often sit only in `chat.db-wal`.
A plain `mode=ro` connection sees them, but SQLite then writes its reader marks into
`chat.db-shm`; with `readonly_shm=1` it maps the shared memory read-only and the three
files stay byte-identical. When Messages is not running there is no `-shm`, and SQLite
cannot open a WAL-mode file read-only without creating `-wal`/`-shm` beside it, so the
main file (and a leftover `-wal`, if any) is copied into a private folder and the copy is
checked against the original's identity and size before and after: with no live writer
that copy is the whole database. `immutable=1` is never used: it ignores the WAL and locks.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imessage_finetune.errors import (
    ChatDbBusy,
    ChatDbError,
    ChatDbIsDirectory,
    ChatDbNotFound,
    ChatDbPermissionDenied,
    NotAChatDb,
    NotSqlite,
)
from imessage_finetune.sources.chatdb.schema import REQUIRED_TABLES

SQLITE_MAGIC = b"SQLite format 3\x00"
WAL_MODE_VERSION = 2  # header bytes 18-19 hold 2 for WAL, 1 for a rollback journal
STABLE_COPY_ATTEMPTS = 5

_TERMINAL_APPS = {
    "Apple_Terminal": "Terminal",
    "iTerm.app": "iTerm",
    "vscode": "Visual Studio Code",
    "WarpTerminal": "Warp",
    "ghostty": "Ghostty",
    "WezTerm": "WezTerm",
    "Hyper": "Hyper",
    "tmux": "the terminal app that runs tmux",
}


def terminal_app() -> str:
    """The app macOS checks for Full Disk Access: the terminal (or editor) running us."""
    program = os.environ.get("TERM_PROGRAM", "")
    return _TERMINAL_APPS.get(program, "the app you run this command from (your terminal)")


def full_disk_access_hint() -> str:
    """What a macOS user must do when the Messages or Contacts database cannot be opened."""
    return (
        f"grant Full Disk Access to {terminal_app()} in System Settings > Privacy & Security > "
        "Full Disk Access (and to its parent app if it runs inside another), then quit and "
        "reopen it"
    )


def sidecar(path: Path, suffix: str) -> Path:
    """`chat.db-wal` / `chat.db-shm` for `chat.db`."""
    return path.with_name(path.name + suffix)


@dataclass(frozen=True)
class DatabaseKind:
    """Which database a path should be, and how the user points at the right one."""

    name: str
    fix: str


CHAT_DB = DatabaseKind(
    "chat.db",
    "check [source] path in your config (on a Mac the Messages database is "
    '~/Library/Messages/chat.db), or use path = "demo" for the built-in demo',
)
ADDRESSBOOK = DatabaseKind(
    "AddressBook-v22.abcddb",
    'check [source] contacts in your config (a path, a list of paths, "auto" or "none")',
)


def check_database_file(path: Path, kind: DatabaseKind = CHAT_DB) -> bool:
    """Check that `path` is a readable SQLite file; return True when it is in WAL mode."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ChatDbNotFound(f"{kind.name} not found at {path}; {kind.fix}") from None
    except PermissionError:
        raise ChatDbPermissionDenied(f"permission denied reading {path}: {full_disk_access_hint()}") from None
    if path.is_dir():
        raise ChatDbIsDirectory(f"{path} is a folder, not a {kind.name} file; {kind.fix}")
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except PermissionError:
        raise ChatDbPermissionDenied(f"permission denied reading {path}: {full_disk_access_hint()}") from None
    if info.st_size == 0:
        raise NotSqlite(f"{path} is empty, not a SQLite database; {kind.fix}")
    if not header.startswith(SQLITE_MAGIC):
        raise NotSqlite(f"{path} is not a SQLite database (its first bytes are not 'SQLite format 3'); {kind.fix}")
    return len(header) > 18 and header[18] == WAL_MODE_VERSION


def _uri(path: Path, **params: str) -> str:
    # as_uri() percent-encodes and writes Windows paths as file:///C:/..., which SQLite expects.
    query = urllib.parse.urlencode(params)
    return f"{Path(path).absolute().as_uri()}?{query}"


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _copy_when_quiet(path: Path, folder: Path, busy_timeout: float) -> Path:
    """Copy a WAL-mode database that no process has open; retry while it is changing."""
    copy = folder / "database.db"
    deadline = time.monotonic() + busy_timeout
    for attempt in range(STABLE_COPY_ATTEMPTS):
        watched = [path, sidecar(path, "-wal"), sidecar(path, "-shm")]
        before = [_file_identity(p) for p in watched]
        shutil.copyfile(path, copy)
        if before[1] is not None:
            shutil.copyfile(watched[1], sidecar(copy, "-wal"))
        after = [_file_identity(p) for p in watched]
        if before == after and after[2] is None:
            return copy
        if time.monotonic() > deadline:
            break
        time.sleep(0.05 * (attempt + 1))
    raise ChatDbBusy(
        f"{path} kept changing while it was being read; wait until Messages is idle (or quit it) and run again"
    )


@contextmanager
def translate_sqlite_errors(path: Path, busy_timeout: float, kind: DatabaseKind = CHAT_DB) -> Iterator[None]:
    """Turn sqlite3 errors raised while reading `path` into ChatDbError subclasses."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise ChatDbBusy(
                f"{path} stayed locked by another program for {busy_timeout:g} s; quit "
                "Messages or try again (raise [source] busy_timeout to wait longer)"
            ) from None
        if "unable to open" in text or "authorization denied" in text or "readonly" in text:
            raise ChatDbPermissionDenied(f"cannot open {path} read-only ({exc}): {full_disk_access_hint()}") from None
        raise ChatDbError(f"cannot read {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise NotSqlite(
            f"{path} is not a readable SQLite database ({exc}); it may be damaged or encrypted; {kind.fix}"
        ) from None


@contextmanager
def open_readonly(
    path: Path, *, busy_timeout: float = 10.0, kind: DatabaseKind = CHAT_DB
) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a live SQLite database that never writes to it.

    Includes rows that are only in the `-wal` file. Errors become ChatDbError subclasses
    that say what to do.
    """
    path = Path(path).expanduser().absolute()
    is_wal = check_database_file(path, kind)
    with tempfile.TemporaryDirectory(prefix="imessage-finetune-") as private:
        os.chmod(private, 0o700)
        with translate_sqlite_errors(path, busy_timeout, kind):
            if not is_wal:
                conn = sqlite3.connect(_uri(path, mode="ro"), uri=True, timeout=busy_timeout)
            elif sidecar(path, "-wal").exists() and sidecar(path, "-shm").exists():
                uri = _uri(path, mode="ro", readonly_shm="1")
                conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
            else:
                copy = _copy_when_quiet(path, Path(private), busy_timeout)
                conn = sqlite3.connect(_uri(copy, mode="ro"), uri=True, timeout=busy_timeout)
            try:
                conn.execute("PRAGMA query_only = 1")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                yield conn
            finally:
                conn.close()


def table_names(conn: sqlite3.Connection) -> set[str]:
    """Names of the tables in a database."""
    return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def require_messages_tables(conn: sqlite3.Connection, path: Path) -> None:
    """Raise NotAChatDb, naming the missing tables, unless this is a Messages database."""
    missing = [t for t in REQUIRED_TABLES if t not in table_names(conn)]
    if missing:
        raise NotAChatDb(
            f"{path} is a SQLite database but not a Messages database: it has no "
            f"{', '.join(missing)} table{'s' if len(missing) > 1 else ''}; point [source] path "
            "at ~/Library/Messages/chat.db (or a copy of it)"
        )


@contextmanager
def open_chat_db(path: Path, *, busy_timeout: float = 10.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a Messages database, checked to have the Messages tables."""
    with open_readonly(path, busy_timeout=busy_timeout) as conn:
        require_messages_tables(conn, path)
        yield conn
