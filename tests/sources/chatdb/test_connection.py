"""Opening a live database read-only: WAL rows included, nothing written, clear errors."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chatdb_builder import ChatDbBuilder
from imessage_finetune.sources.chatdb.connection import open_chat_db, open_readonly
from imessage_finetune.errors import (
    ChatDbBusy,
    ChatDbIsDirectory,
    ChatDbNotFound,
    ChatDbPermissionDenied,
    NotAChatDb,
    NotSqlite,
)


def file_states(db: Path) -> dict[str, str | None]:
    """sha256 of chat.db, -wal and -shm (None when a file does not exist)."""
    states = {}
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        states[suffix or "main"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return states


def live_wal_database(tmp_path: Path) -> tuple[ChatDbBuilder, int]:
    """A WAL database held open by a writer (like Messages) with its newest rows only in the WAL."""
    db = ChatDbBuilder(tmp_path / "chat.db", wal=True)
    db.conn.execute("PRAGMA wal_autocheckpoint = 0")
    alice = db.handle("+15555550101")
    chat = db.chat("+15555550101", [alice])
    db.message(chat, "checkpointed", handle=alice)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for i in range(3):
        db.message(chat, f"only in the WAL {i}", handle=alice)
    return db, 4


def count_in_subprocess(db: Path) -> str:
    """Count messages through open_readonly in another process, as the CLI would."""
    code = (
        "import sys; from pathlib import Path;"
        "from imessage_finetune.sources.chatdb.connection import open_readonly\n"
        "with open_readonly(Path(sys.argv[1])) as c: print(c.execute('select count(*) from message').fetchone()[0])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_reads_rows_that_are_only_in_the_wal_without_touching_any_file(tmp_path: Path) -> None:
    """A live WAL database: every row is seen and chat.db, -wal and -shm stay byte-identical."""
    db, expected = live_wal_database(tmp_path)
    before = file_states(db.path)
    assert before["-wal"] is not None and before["-shm"] is not None
    assert count_in_subprocess(db.path) == str(expected)
    assert file_states(db.path) == before
    db.close()


def test_wal_database_with_no_live_connection_is_read_and_left_alone(tmp_path: Path) -> None:
    """Messages closed: no -wal/-shm beside chat.db, and none is created by reading it."""
    db = ChatDbBuilder(tmp_path / "chat.db", wal=True)
    chat = db.chat("+15555550101", [db.handle("+15555550101")])
    db.message(chat, "hello")
    db.close()
    before = sorted(os.listdir(tmp_path))
    assert before == ["chat.db"]
    assert count_in_subprocess(db.path) == "1"
    assert sorted(os.listdir(tmp_path)) == before


def test_missing_file_says_where_to_look(tmp_path: Path) -> None:
    """A path with no file: ChatDbNotFound naming the path and the usual location."""
    with pytest.raises(ChatDbNotFound, match=r"not found at .*nope\.db.*~/Library/Messages/chat\.db"):
        with open_readonly(tmp_path / "nope.db"):
            pass


def test_directory_is_refused(tmp_path: Path) -> None:
    """A folder instead of a file: the error says to point at the file inside it."""
    with pytest.raises(ChatDbIsDirectory, match="is a folder"):
        with open_readonly(tmp_path):
            pass


@pytest.mark.parametrize("content", [b"", b"hello, this is text and not a database" * 10])
def test_non_sqlite_file_is_refused(tmp_path: Path, content: bytes) -> None:
    """An empty or non-SQLite file: NotSqlite, and the file is left as it was."""
    path = tmp_path / "chat.db"
    path.write_bytes(content)
    with pytest.raises(NotSqlite, match="not a SQLite database"):
        with open_readonly(path):
            pass
    assert path.read_bytes() == content


def test_sqlite_file_without_messages_tables_names_what_is_missing(tmp_path: Path) -> None:
    """A SQLite file that is not a Messages database: the missing tables are named."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE message (ROWID INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("CREATE TABLE handle (ROWID INTEGER PRIMARY KEY, id TEXT)")
    with pytest.raises(NotAChatDb, match="no chat, chat_message_join, chat_handle_join tables"):
        with open_chat_db(path):
            pass


def test_permission_denied_points_to_full_disk_access(tmp_path: Path) -> None:
    """An unreadable file (as on macOS without Full Disk Access): say which app needs access."""
    db = ChatDbBuilder(tmp_path / "chat.db")
    db.close()
    db.path.chmod(0o000)
    code = (
        "import sys; from pathlib import Path;"
        "from imessage_finetune.sources.chatdb.connection import open_readonly\n"
        "try:\n"
        "    with open_readonly(Path(sys.argv[1])): pass\n"
        "except Exception as e: print(type(e).__name__, e)\n"
    )
    command = [sys.executable, "-c", code, str(db.path)]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that bypass file modes
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    env = {**os.environ, "TERM_PROGRAM": "Apple_Terminal"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    assert result.stdout.startswith(ChatDbPermissionDenied.__name__), result.stdout + result.stderr
    assert "grant Full Disk Access to Terminal" in result.stdout


def test_locked_database_gives_up_after_the_bounded_wait(tmp_path: Path) -> None:
    """A database another process keeps locked: ChatDbBusy after busy_timeout, not a hang."""
    db = ChatDbBuilder(tmp_path / "chat.db")
    db.close()
    holder = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ChatDbBusy, match=r"stayed locked .* 0\.2 s"):
            with open_readonly(db.path, busy_timeout=0.2):
                pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_waits_for_a_short_lock(tmp_path: Path) -> None:
    """A lock released within busy_timeout is waited out, not reported."""
    db = ChatDbBuilder(tmp_path / "chat.db")
    db.close()
    holder = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    release.start()
    with open_readonly(db.path, busy_timeout=5) as conn:
        assert conn.execute("SELECT count(*) FROM message").fetchone() == (0,)
    release.join()
    holder.close()
