"""The doit pipeline up to sessions.json: builds, skips what is current, rebuilds on change."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from chatdb_builder import ChatDbBuilder
from pipeline_runner import run_doit, write_config
from imessage_finetune import artifacts

ALICE = "+15555550101"


def digests(db: Path) -> dict[str, str | None]:
    """sha256 of the three files of a SQLite database."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = db.with_name(db.name + suffix)
        out[suffix] = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
    return out


@pytest.fixture
def live_source(tmp_path: Path) -> ChatDbBuilder:
    """A chat.db kept open by a writer, with its newest rows only in the WAL."""
    src = tmp_path / "Messages"
    src.mkdir()
    db = ChatDbBuilder(src / "chat.db", wal=True)
    db.conn.execute("PRAGMA wal_autocheckpoint = 0")
    alice = db.handle(ALICE)
    db.alice_chat = db.chat(ALICE, [alice])  # type: ignore[attr-defined]
    db.alice = alice  # type: ignore[attr-defined]
    db.message(db.alice_chat, "checkpointed", handle=alice)  # type: ignore[attr-defined]
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.message(db.alice_chat, "in the WAL", handle=alice)  # type: ignore[attr-defined]
    db.message(db.alice_chat, "mine, from another device", from_me=True)  # type: ignore[attr-defined]
    yield db
    db.close()


def sessions_texts(config_file: Path) -> list[str]:
    doc = json.loads((config_file.parent / "out" / artifacts.SESSIONS.filename).read_text())
    return [m["data"]["content"] for s in doc["sessions"] for m in s["messages"]]


def test_sessions_from_a_live_wal_database_leaves_the_source_untouched(
    tmp_path: Path, live_source: ChatDbBuilder
) -> None:
    """doit sessions sees WAL-only rows, and chat.db, -wal, -shm are byte-identical after."""
    config = write_config(tmp_path, live_source.path)
    before = digests(live_source.path)
    results = run_doit(config, "sessions")
    assert results == {"snapshot": "success", "sessions": "success", "exit": "0"}
    assert sessions_texts(config) == ["checkpointed", "in the WAL", "mine, from another device"]
    assert digests(live_source.path) == before


def test_second_run_runs_nothing_and_a_new_wal_message_rebuilds(
    tmp_path: Path, live_source: ChatDbBuilder
) -> None:
    """Nothing changed: all up to date. One message added (in the WAL only): both stages rerun."""
    config = write_config(tmp_path, live_source.path)
    run_doit(config, "sessions")
    assert run_doit(config, "sessions") == {"snapshot": "up-to-date", "sessions": "up-to-date", "exit": "0"}
    main_before = live_source.path.read_bytes()
    live_source.message(live_source.alice_chat, "newest", handle=live_source.alice)  # type: ignore[attr-defined]
    assert live_source.path.read_bytes() == main_before  # the change is only in chat.db-wal
    assert run_doit(config, "sessions") == {"snapshot": "success", "sessions": "success", "exit": "0"}
    assert sessions_texts(config)[-1] == "newest"


def test_touching_the_source_without_changing_it_rebuilds_nothing(tmp_path: Path, live_source: ChatDbBuilder) -> None:
    """A new mtime with the same bytes is not a change."""
    config = write_config(tmp_path, live_source.path)
    run_doit(config, "sessions")
    live_source.path.touch()
    assert run_doit(config, "sessions")["snapshot"] == "up-to-date"


def test_a_sessions_key_reruns_sessions_but_not_the_snapshot(tmp_path: Path, live_source: ChatDbBuilder) -> None:
    """Config is compared per stage: [sessions] owner_name changes only sessions.json."""
    config = write_config(tmp_path, live_source.path)
    run_doit(config, "sessions")
    write_config(tmp_path, live_source.path, '[sessions]\nowner_name = "Ana"\n')
    assert run_doit(config, "sessions") == {"snapshot": "up-to-date", "sessions": "success", "exit": "0"}


def test_hand_edited_sessions_json_is_rebuilt(tmp_path: Path, live_source: ChatDbBuilder) -> None:
    """A damaged intermediate is detected by its hash and rebuilt, never passed on."""
    config = write_config(tmp_path, live_source.path)
    run_doit(config, "sessions")
    target = tmp_path / "out" / artifacts.SESSIONS.filename
    good = target.read_bytes()
    target.write_bytes(good.replace(b"checkpointed", b"tampered!!!!"))
    assert run_doit(config, "sessions")["sessions"] == "success"
    assert target.read_bytes() == good


def test_missing_source_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    """A wrong path: the task fails with the reader's message and no artifact appears."""
    config = write_config(tmp_path, tmp_path / "missing.db")
    results = run_doit(config, "sessions")
    assert results["snapshot"] == "fail" and results["exit"] == "1"
    assert not (tmp_path / "out" / artifacts.SNAPSHOT.filename).exists()
    assert not (tmp_path / "out" / artifacts.SESSIONS.filename).exists()


def test_demo_builds_to_train_jsonl_and_ai_sender_reruns_only_merged_and_dataset(tmp_path: Path) -> None:
    """The whole local chain on the demo; changing ai_sender reruns merged and dataset only,
    and every artifact and its folder are private to the user."""
    config = write_config(tmp_path, "demo")
    assert run_doit(config, "dataset") == {
        "demo": "success", "snapshot": "success", "sessions": "success",
        "merged": "success", "dataset": "success", "exit": "0",
    }  # fmt: skip
    out = tmp_path / "out"
    assert (out / artifacts.TRAIN.filename).stat().st_size > 0
    assert out.stat().st_mode & 0o777 == 0o700
    for path in out.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    write_config(tmp_path, "demo", '[dataset]\nai_sender = "Tortoise"\n')
    assert run_doit(config, "dataset") == {
        "demo": "up-to-date", "snapshot": "up-to-date", "sessions": "up-to-date",
        "merged": "success", "dataset": "success", "exit": "0",
    }  # fmt: skip


def test_two_clean_builds_are_byte_identical(tmp_path: Path) -> None:
    """Same inputs and config in two folders: the same bytes in every artifact."""
    digests_by_build = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        run_doit(write_config(folder, "demo"), "dataset")
        out = folder / "out"
        digests_by_build.append(
            {a.filename: hashlib.sha256((out / a.filename).read_bytes()).hexdigest() for a in artifacts.ALL if (out / a.filename).exists()}
        )
    assert digests_by_build[0] == digests_by_build[1]
    assert len(digests_by_build[0]) >= 6
