"""sessions.json: LangChain's messages_to_dict shape, schema-valid, published atomically."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from langchain_core.messages import HumanMessage, messages_from_dict, messages_to_dict

from chatdb_builder import BASE_TIME, ChatDbBuilder
from imessage_finetune import artifacts
from imessage_finetune.sources.contacts import Contact, ContactBook
from imessage_finetune.sources.chatdb.reader import ReaderOptions
from imessage_finetune.errors import SchemaValidationError
from imessage_finetune.stages.sessions import write_sessions

ALICE = "+15555550101"


def small_db(builder: ChatDbBuilder) -> Path:
    alice, bob = builder.handle(ALICE), builder.handle("bob@example.com")
    one = builder.chat(ALICE, [alice])
    group = builder.chat("chat42", [alice, bob], group=True, display_name="Trio")
    builder.message(one, "hi 🐢", handle=alice, at=BASE_TIME)
    builder.message(one, "hello", from_me=True, at=BASE_TIME + 1)
    builder.message(group, None, body="from the blob", handle=bob, at=BASE_TIME + 2)
    builder.message(group, "Loved “from the blob”", handle=alice, associated_message_type=2000, at=BASE_TIME + 3)
    builder.close()
    return builder.path


def test_sessions_json_round_trips_through_langchain(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """Each message is exactly messages_to_dict's form of a HumanMessage, so it round-trips."""
    target = tmp_path / "sessions.json"
    contacts = ContactBook.from_contacts([Contact(first="Alice", phones=(ALICE,))])
    write_sessions(small_db(builder), contacts, target, ReaderOptions())
    document = json.loads(target.read_text())
    jsonschema.Draft202012Validator(json.loads(artifacts.SESSIONS.schema_path.read_text())).validate(document)
    first = document["sessions"][0]
    assert first["participants"] == [{"handle": ALICE, "name": "Alice"}]
    messages = messages_from_dict(first["messages"])
    assert all(isinstance(m, HumanMessage) for m in messages)
    assert messages_to_dict(messages) == first["messages"]
    kwargs = messages[0].additional_kwargs
    assert kwargs["message_time"] == BASE_TIME
    assert kwargs["message_time_iso"] == "2023-11-14T22:13:20+00:00"
    assert (kwargs["sender"], kwargs["is_from_me"], kwargs["handle"]) == ("Alice", False, ALICE)
    assert messages[1].additional_kwargs["sender"] == "Me"
    group = document["sessions"][1]
    assert group["is_group"] and group["display_name"] == "Trio"
    assert [m["data"]["content"] for m in group["messages"]] == ["from the blob"]
    assert document["stats"]["excluded"] == {"tapback": 1}


def test_output_is_byte_identical_across_runs(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """Same snapshot and options: the same bytes (no clock, no random order)."""
    db = small_db(builder)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_sessions(db, ContactBook.from_contacts([]), a, ReaderOptions())
    write_sessions(db, ContactBook.from_contacts([]), b, ReaderOptions())
    assert a.read_bytes() == b.read_bytes()


def test_schema_violation_publishes_nothing(builder: ChatDbBuilder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session that breaks the schema stops the stage; the previous file stays as it was."""
    db = small_db(builder)
    target = tmp_path / "sessions.json"
    target.write_text("previous good file")
    import imessage_finetune.stages.sessions as stage

    real = stage.message_kwargs
    monkeypatch.setattr(stage, "message_kwargs", lambda m: {**real(m), "message_time": "soon"})
    with pytest.raises(SchemaValidationError, match=r"sessions\.json#/sessions/0/messages/\d+/data/additional_kwargs/message_time: breaks the schema rule type"):
        write_sessions(db, ContactBook.from_contacts([]), target, ReaderOptions())
    assert target.read_text() == "previous good file"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_demo_sessions_hold_every_expected_message_and_nothing_else(tmp_path: Path) -> None:
    """On the demo, the output is exactly the script's expected texts, per chat, in date
    order, under the right senders, and the exclusions are counted under their reasons."""
    from collections import Counter

    from imessage_finetune.fixtures.demo import build_demo
    from imessage_finetune.fixtures.demo_dialogue import DEMO_CHATS, DEMO_CONTACTS, DEMO_MESSAGES
    from imessage_finetune.stages.snapshot import take_snapshot, write_contacts
    from imessage_finetune.stages.sessions import load_contacts

    demo = build_demo(tmp_path / "demo")
    take_snapshot(demo.chat_db, tmp_path / "chat.db")
    write_contacts([demo.addressbook], tmp_path / "contacts.json")
    write_sessions(tmp_path / "chat.db", load_contacts(tmp_path / "contacts.json"), tmp_path / "s.json", ReaderOptions())
    document = json.loads((tmp_path / "s.json").read_text())

    book = ContactBook.from_contacts(DEMO_CONTACTS)
    chat_key = {c.identifier: c.key for c in DEMO_CHATS}
    expected: dict[str, list[tuple[str, str, str]]] = {}
    for m in sorted(DEMO_MESSAGES, key=lambda m: (m.date, m.rowid)):
        if m.expected_text is None:
            continue
        sender = "Me" if m.sender is None else book.name_for(m.sender) or m.sender
        for key in m.chats:
            expected.setdefault(key, []).append((m.guid, sender, m.expected_text))
    actual = {
        chat_key[s["chat_identifier"]]: [
            (
                msg["data"]["additional_kwargs"]["guid"],
                msg["data"]["additional_kwargs"]["sender"],
                msg["data"]["content"],
            )
            for msg in s["messages"]
        ]
        for s in document["sessions"]
    }
    assert actual == expected
    reasons = Counter(m.excluded_reason for m in DEMO_MESSAGES if m.excluded_reason)
    assert document["stats"]["excluded"] == dict(sorted(reasons.items()))
