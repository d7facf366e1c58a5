"""The snapshot stage: a consistent private copy, WAL included; bad sources publish nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chatdb_builder import ChatDbBuilder
from imessage_finetune.atomic import clean_stale_temporaries
from imessage_finetune.errors import (
    ChatDbBusy,
    ChatDbIsDirectory,
    ChatDbNotFound,
    NotAChatDb,
    NotSqlite,
)
from imessage_finetune.stages.snapshot import take_snapshot


def small_db(path: Path, wal: bool = False) -> ChatDbBuilder:
    db = ChatDbBuilder(path, wal=wal)
    chat = db.chat("+15555550101", [db.handle("+15555550101")])
    db.message(chat, "hello")
    return db


def test_snapshot_is_self_contained_and_deterministic(tmp_path: Path) -> None:
    """The copy has no -wal beside it, opens as a Messages db, and two copies are identical."""
    small_db(tmp_path / "src.db", wal=True).close()
    a, b = tmp_path / "a" / "chat.db", tmp_path / "b" / "chat.db"
    summary = take_snapshot(tmp_path / "src.db", a)
    take_snapshot(tmp_path / "src.db", b)
    assert (summary.messages, summary.chats, summary.changed) == (1, 1, True)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in a.parent.iterdir()) == ["chat.db"]
    assert a.stat().st_mode & 0o077 == 0
    with sqlite3.connect(a) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_unchanged_source_leaves_the_snapshot_untouched(tmp_path: Path) -> None:
    """Same content: the artifact keeps its bytes and mtime, so nothing downstream reruns."""
    small_db(tmp_path / "src.db").close()
    target = tmp_path / "out" / "chat.db"
    take_snapshot(tmp_path / "src.db", target)
    before = target.stat().st_mtime_ns
    assert take_snapshot(tmp_path / "src.db", target).changed is False
    assert target.stat().st_mtime_ns == before


def make_missing(tmp_path: Path) -> Path:
    return tmp_path / "absent.db"


def make_directory(tmp_path: Path) -> Path:
    (tmp_path / "Messages").mkdir()
    return tmp_path / "Messages"


def make_text_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.db").write_text("not a database")
    return tmp_path / "notes.db"


def make_other_sqlite(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE things (x)")
    return tmp_path / "other.db"


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (make_missing, ChatDbNotFound, "not found at"),
        (make_directory, ChatDbIsDirectory, "is a folder"),
        (make_text_file, NotSqlite, "not a SQLite database"),
        (make_other_sqlite, NotAChatDb, "no message, chat, handle, chat_message_join, chat_handle_join tables"),
    ],
)
def test_bad_source_is_explained_and_nothing_is_written(tmp_path: Path, make, error: type, message: str) -> None:
    """Each bad source raises its typed error and leaves no artifact or temporary file."""
    source = make(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(error, match=message):
        take_snapshot(source, out / "chat.db")
    assert list(out.iterdir()) == []


def test_locked_source_gives_up_and_writes_nothing(tmp_path: Path) -> None:
    """A source another process keeps locked: ChatDbBusy after the bounded wait, no artifact."""
    small_db(tmp_path / "src.db").close()
    holder = sqlite3.connect(tmp_path / "src.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    out = tmp_path / "out"
    out.mkdir()
    try:
        with pytest.raises(ChatDbBusy, match="stayed locked"):
            take_snapshot(tmp_path / "src.db", out / "chat.db", busy_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert list(out.iterdir()) == []


def test_killed_snapshot_leaves_no_artifact(tmp_path: Path) -> None:
    """SIGKILL in the middle of the copy: no chat.db appears (only a temporary file, which the
    next run removes), so no later stage can take a partial snapshot for good."""
    db = small_db(tmp_path / "src.db")
    for i in range(300):
        db.message(1, f"filler message {i} " * 20)
    db.close()
    out = tmp_path / "out"
    code = (
        "import os, signal, sqlite3, sys\n"
        "from pathlib import Path\n"
        "class Killed(sqlite3.Connection):\n"
        "    def backup(self, target, **kw):\n"
        "        kill = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return super().backup(target, pages=1, progress=kill)\n"
        "connect = sqlite3.connect\n"
        "sqlite3.connect = lambda *a, **kw: connect(*a, factory=Killed, **kw)\n"
        "from imessage_finetune.stages.snapshot import take_snapshot\n"
        "take_snapshot(Path(sys.argv[1]), Path(sys.argv[2]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "src.db"), str(out / "chat.db")])
    assert done.returncode == -9
    assert not (out / "chat.db").exists()
    assert clean_stale_temporaries(out) and list(out.iterdir()) == []


def test_contacts_sharing_a_number_leave_it_unresolved_and_keep_it_out_of_errors(tmp_path: Path) -> None:
    """Two cards with one number: the number maps to no name, and contacts.json is still written."""
    import json

    from imessage_finetune.fixtures.addressbook import write_addressbook
    from imessage_finetune.sources.contacts import Contact
    from imessage_finetune.stages.snapshot import write_contacts

    book = tmp_path / "AddressBook-v22.abcddb"
    write_addressbook(book, [Contact(first="Mom", phones=("+15555550100",)), Contact(first="Dad", phones=("+15555550100",))])
    write_contacts([book], tmp_path / "contacts.json")
    assert json.loads((tmp_path / "contacts.json").read_text())["contacts"] == {"15555550100": ""}
