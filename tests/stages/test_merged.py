"""merged.json: runs merged, the chosen voice as AI, idle-gap sessions, windows within budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, messages_from_dict

from chatdb_builder import BASE_TIME, ChatDbBuilder
from imessage_finetune.sources.contacts import Contact, ContactBook
from imessage_finetune.sources.chatdb.reader import ReaderOptions
from imessage_finetune.config import DatasetConfig
from imessage_finetune.errors import DatasetError
from imessage_finetune.stages.merged import write_merged
from imessage_finetune.stages.sessions import write_sessions
from imessage_finetune.tokens import counter_for

ALICE, BOB = "+15555550101", "bob@example.com"
COUNTER = counter_for("gpt-4.1-mini-2025-04-14")
HOUR = 3600


def sessions_file(builder: ChatDbBuilder, tmp_path: Path, script: list[tuple[str, str | None, str, float]]) -> Path:
    """Build a chat.db from (chat, sender handle or None for the owner, text, seconds) rows."""
    handles = {ALICE: builder.handle(ALICE), BOB: builder.handle(BOB)}
    chats = {
        "alice": builder.chat(ALICE, [handles[ALICE]]),
        "group": builder.chat("chat5", [handles[ALICE], handles[BOB]], group=True, display_name="Trio"),
    }
    for chat, sender, text, offset in script:
        if sender is None:
            builder.message(chats[chat], text, from_me=True, at=BASE_TIME + offset)
        else:
            builder.message(chats[chat], text, handle=handles[sender], at=BASE_TIME + offset)
    builder.close()
    contacts = ContactBook.from_contacts([Contact(first="Aunt", last="Hillary", phones=(ALICE,))])
    path = tmp_path / "sessions.json"
    write_sessions(builder.path, contacts, path, ReaderOptions())
    return path


def merge(path: Path, tmp_path: Path, **options: object) -> dict:
    write_merged(path, tmp_path / "merged.json", replace(DatasetConfig(), **options), COUNTER)
    return json.loads((tmp_path / "merged.json").read_text())


def contents(example: dict) -> list[tuple[str, str]]:
    return [(m["type"], m["data"]["content"]) for m in example["messages"]]


def test_runs_merge_and_owner_is_the_ai_side(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """Consecutive messages of one sender become one turn; "me" maps the owner to AI."""
    path = sessions_file(builder, tmp_path, [
        ("alice", ALICE, "hi", 0), ("alice", ALICE, "you there?", 10),
        ("alice", None, "yes", 20), ("alice", None, "hello", 30), ("alice", ALICE, "good", 40),
    ])  # fmt: skip
    merged = merge(path, tmp_path, ai_sender="me", merge_separator="\n\n")
    [example] = merged["examples"]
    assert contents(example) == [("human", "hi\n\nyou there?"), ("ai", "yes\n\nhello")]
    messages = messages_from_dict(example["messages"])
    assert isinstance(messages[0], HumanMessage) and isinstance(messages[1], AIMessage)
    assert messages[1].additional_kwargs["guids"] and len(messages[0].additional_kwargs["guids"]) == 2


def test_a_contact_can_be_the_ai_side_and_only_their_messages_are(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """ai_sender = a contact's name: assistant turns are that contact's messages only."""
    path = sessions_file(builder, tmp_path, [
        ("group", ALICE, "hello all", 0), ("group", BOB, "hey", 10),
        ("group", None, "hi", 20), ("group", ALICE, "how are you", 30),
    ])  # fmt: skip
    merged = merge(path, tmp_path, ai_sender="aunt hillary")
    [example] = merged["examples"]
    ai = [m for m in example["messages"] if m["type"] == "ai"]
    assert {m["data"]["additional_kwargs"]["sender"] for m in ai} == {"Aunt Hillary"}
    humans = [m["data"]["name"] for m in example["messages"] if m["type"] == "human"]
    assert humans == ["bob_example_com", "Me"]


def test_group_senders_as_prefix_or_groups_left_out(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """group_chats = prefix writes "Name: text"; exclude drops group chats and counts them."""
    path = sessions_file(builder, tmp_path, [("group", BOB, "hey", 0), ("group", None, "hi", 10)])
    prefixed = merge(path, tmp_path, group_chats="prefix")
    assert contents(prefixed["examples"][0]) == [("human", "bob@example.com: hey"), ("ai", "hi")]
    excluded = merge(path, tmp_path, group_chats="exclude")
    assert excluded["examples"] == [] and excluded["stats"]["dropped"] == {"group_chat": 1}


def test_unknown_ai_sender_lists_the_senders_that_exist(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """A name that matches nobody is an error naming who does exist."""
    path = sessions_file(builder, tmp_path, [("alice", ALICE, "hi", 0), ("alice", None, "yo", 1)])
    with pytest.raises(DatasetError, match=r"'Tortoise' matches nobody.*Aunt Hillary \(1\), Me \(1\)"):
        merge(path, tmp_path, ai_sender="Tortoise")
    assert not (tmp_path / "merged.json").exists()


def test_idle_gap_starts_a_new_session_and_sessions_without_ai_are_dropped(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """A silence longer than idle_gap_hours cuts the chat; a part with no AI turn is counted."""
    path = sessions_file(builder, tmp_path, [
        ("alice", ALICE, "morning", 0), ("alice", None, "morning!", 60),
        ("alice", ALICE, "next day, no answer", 30 * HOUR),
        ("alice", ALICE, "week later", 200 * HOUR), ("alice", None, "sorry", 200 * HOUR + 5),
    ])  # fmt: skip
    merged = merge(path, tmp_path, idle_gap_hours=4.0)
    assert [contents(e) for e in merged["examples"]] == [
        [("human", "morning"), ("ai", "morning!")],
        [("human", "week later"), ("ai", "sorry")],
    ]
    assert merged["stats"]["dropped"] == {"no_ai_turn": 1}
    # The two messages of one run that straddle a gap are not merged across it.
    assert all(len(m["data"]["additional_kwargs"]["guids"]) == 1 for e in merged["examples"] for m in e["messages"])


def test_long_sessions_are_windowed_within_the_token_budget(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """No example exceeds max_tokens; windows overlap and each ends on an AI turn."""
    script = []
    for i in range(60):
        script.append(("alice", ALICE, f"question number {i} about tortoises and paradoxes", i * 60))
        script.append(("alice", None, f"answer number {i}, which is long enough to count", i * 60 + 30))
    path = sessions_file(builder, tmp_path, script)
    merged = merge(path, tmp_path, max_tokens=200, overlap_messages=2)
    examples = merged["examples"]
    assert len(examples) > 5
    for example in examples:
        roles = {"human": "user", "ai": "assistant"}
        lines = [{"role": roles[m["type"]], "content": m["data"]["content"]} for m in example["messages"]]
        assert COUNTER.count_example(lines) <= 200
        assert example["messages"][-1]["type"] == "ai"
    first, second = (contents(e) for e in examples[:2])
    assert first[-2:] == second[:2]
    assert [e["part"] for e in examples] == list(range(len(examples)))


def test_redaction_before_anything_is_written(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """Switchable redaction of numbers, emails, codes and URLs, counted in the stats."""
    path = sessions_file(builder, tmp_path, [
        ("alice", ALICE, "call me at +1 555 555 0199 or mail a@b.example.org", 0),
        ("alice", None, "your code is 483920, see https://example.com/x", 10),
    ])  # fmt: skip
    merged = merge(path, tmp_path, redact_phones=True, redact_emails=True, redact_codes=True, redact_urls=False)
    text = (tmp_path / "merged.json").read_text()
    assert "0199" not in text and "a@b.example.org" not in text and "483920" not in text
    assert "https://example.com/x" in text
    assert merged["stats"]["redactions"] == {"code": 1, "email": 1, "phone": 1}


def test_redaction_also_hides_senders_known_only_by_their_number(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """In a group, a sender with no contact name is their handle: with redaction on, a
    stable "Person N" stands in for it, as a name or as a prefix."""
    path = sessions_file(builder, tmp_path, [("group", BOB, "hey", 0), ("group", None, "hi", 10)])
    named = merge(path, tmp_path, redact_emails=True)
    assert named["examples"][0]["messages"][0]["data"]["name"] == "Person_1"
    prefixed = merge(path, tmp_path, redact_emails=True, group_chats="prefix")
    assert contents(prefixed["examples"][0])[0] == ("human", "Person 1: hey")
    visible = [(m["data"]["content"], m["data"]["name"]) for m in prefixed["examples"][0]["messages"]]
    assert BOB not in str(visible)  # what reaches train.jsonl; metadata keeps the handle locally


def test_special_token_strings_are_neutralised_not_fatal(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """A message quoting <|endoftext|> would make OpenAI refuse the file: it is replaced and counted."""
    path = sessions_file(builder, tmp_path, [("alice", ALICE, "what is <|endoftext|>?", 0), ("alice", None, "a token", 5)])
    merged = merge(path, tmp_path)
    assert contents(merged["examples"][0])[0] == ("human", "what is [special token]?")
    assert merged["stats"]["redactions"] == {"special_token": 1}


def test_the_owners_name_works_as_ai_sender(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """ai_sender set to the owner's configured name means the owner, like "me"."""
    path = sessions_file(builder, tmp_path, [("alice", ALICE, "hi", 0), ("alice", None, "hello", 5)])
    merged = merge(path, tmp_path, ai_sender="ME")
    assert contents(merged["examples"][0]) == [("human", "hi"), ("ai", "hello")]


def test_known_names_are_hidden_everywhere_with_redact_known_names(builder: ChatDbBuilder, tmp_path: Path) -> None:
    """redact_known_names replaces the contacts' names and the participants' exact handles in
    any message, and names a group sender the redaction hides "Person N"; counted."""
    path = sessions_file(builder, tmp_path, [
        ("group", BOB, "Hillary said call 555-555-0101", 0), ("group", None, "ok, Aunt Hillary", 10),
        ("group", ALICE, "or bob@EXAMPLE.com", 20), ("group", None, "but not 555-123-4567", 30),
    ])  # fmt: skip
    contacts = tmp_path / "contacts.json"
    contacts.write_text(json.dumps({"sources": 1, "contacts": {"15555550101": "Aunt Hillary"}}))
    write_merged(path, tmp_path / "merged.json", replace(DatasetConfig(), redact_known_names=True), COUNTER, contacts)
    merged = json.loads((tmp_path / "merged.json").read_text())
    [example] = merged["examples"]
    assert contents(example) == [
        ("human", "[name] said call [phone]"), ("ai", "ok, [name]"),
        ("human", "or [email]"), ("ai", "but not 555-123-4567"),
    ]  # fmt: skip
    assert [m["data"]["name"] for m in example["messages"]] == ["Person_1", None, "Person_2", None]
    assert merged["stats"]["redactions"] == {"email": 1, "name": 2, "phone": 1}
