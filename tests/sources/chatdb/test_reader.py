"""The reader on fixtures in Apple's schema: what a correct reader keeps, drops and names."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from chatdb_builder import BASE_TIME, ChatDbBuilder
from imessage_finetune.fixtures import summary_info
from imessage_finetune.fixtures.typedstream import encode
from imessage_finetune.sources.chatdb import typedstream
from imessage_finetune.fixtures.apple_schema import MACOS_RELEASES
from imessage_finetune.sources.chatdb.connection import open_chat_db
from imessage_finetune.sources.contacts import Contact, ContactBook
from imessage_finetune.sources.chatdb.reader import ChatDbReader, ReaderOptions

ALICE = "+15555550101"
BOB = "bob@example.com"


def read(db: ChatDbBuilder, options: ReaderOptions | None = None, contacts: ContactBook | None = None):
    """Close the builder and read every conversation: ({chat identifier: [(sender, text)]}, stats)."""
    db.close()
    with open_chat_db(db.path) as conn:
        reader = ChatDbReader(conn, options, contacts)
        found = {chat.identifier: [(m.sender, m.text) for m in msgs] for chat, msgs in reader.conversations()}
    return found, reader.stats


def test_owner_messages_with_handle_zero_are_kept_and_named(builder: ChatDbBuilder) -> None:
    """Own messages typed on another device have handle_id 0; they are the owner's, by is_from_me."""
    alice = builder.handle(ALICE)
    chat = builder.chat(ALICE, [alice])
    builder.message(chat, "hi from alice", handle=alice)
    builder.message(chat, "sent from my Mac", from_me=True, handle=0)
    builder.message(chat, "sent from my phone", from_me=True, handle=alice)
    found, stats = read(builder, ReaderOptions(owner_name="Ana"))
    assert found[ALICE] == [(ALICE, "hi from alice"), ("Ana", "sent from my Mac"), ("Ana", "sent from my phone")]
    assert stats.owner_without_handle == 1


def test_group_messages_appear_once_under_their_real_sender(builder: ChatDbBuilder) -> None:
    """A group of three: each message once (not once per participant), with its sender."""
    alice, bob = builder.handle(ALICE), builder.handle(BOB)
    group = builder.chat("chat1234", [alice, bob], group=True, display_name="Trio")
    builder.message(group, "one", handle=alice)
    builder.message(group, "two", handle=bob)
    builder.message(group, "three", from_me=True)
    contacts = ContactBook.from_contacts([Contact(first="Alice", phones=(ALICE,))])
    found, _ = read(builder, contacts=contacts)
    assert found == {"chat1234": [("Alice", "one"), (BOB, "two"), ("Me", "three")]}


def test_message_joined_to_two_chats_appears_in_each(builder: ChatDbBuilder) -> None:
    """A message with two chat_message_join rows belongs to both chats."""
    alice = builder.handle(ALICE)
    a = builder.chat(ALICE, [alice])
    b = builder.chat("chat99", [alice], group=True)
    builder.message([a, b], "in both", handle=alice)
    found, _ = read(builder)
    assert found[ALICE] == [(ALICE, "in both")] and found["chat99"] == [(ALICE, "in both")]


def test_orphan_messages_are_counted_not_kept(builder: ChatDbBuilder) -> None:
    """A message in no chat (Recently Deleted, or lost by sync) is left out and counted."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, "kept")
    builder.message([], "orphan")
    found, stats = read(builder)
    assert [t for _, t in found[ALICE]] == ["kept"]
    assert stats.excluded["orphan"] == 1


def test_messages_in_date_order_ties_by_rowid(builder: ChatDbBuilder) -> None:
    """ROWID is insertion order, not time: an old message synced late is placed by its date."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, "second", at=BASE_TIME + 100)
    builder.message(chat, "third (same second, later row)", at=BASE_TIME + 100)
    builder.message(chat, "first (inserted late)", at=BASE_TIME)
    found, _ = read(builder)
    assert [t for _, t in found[ALICE]] == ["first (inserted late)", "second", "third (same second, later row)"]


@pytest.mark.parametrize("release", MACOS_RELEASES)
def test_every_macos_release_layout_is_read_with_correct_dates(tmp_path: Path, release: str) -> None:
    """Seconds before 10.13, nanoseconds after; missing newer columns are not an error."""
    db = ChatDbBuilder(tmp_path / "chat.db", release=release)
    chat = db.chat(ALICE, [db.handle(ALICE)])
    db.message(chat, "hello", at=BASE_TIME + 0.5 if release != "10.12" else BASE_TIME)
    db.close()
    with open_chat_db(db.path) as conn:
        [(_, [message])] = list(ChatDbReader(conn).conversations())
    assert int(message.unix_time) == BASE_TIME
    assert message.text == "hello"


def test_dates_do_not_depend_on_the_machine_time_zone(builder: ChatDbBuilder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same row gives the same Unix time and ISO string whatever TZ the machine is in."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, "tz", at=BASE_TIME)
    builder.close()
    seen = []
    for zone in ("UTC", "America/Los_Angeles", "Asia/Kolkata"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        with open_chat_db(builder.path) as conn:
            [(_, [message])] = list(ChatDbReader(conn).conversations())
        seen.append(message.unix_time)
    monkeypatch.delenv("TZ")
    time.tzset()
    assert seen == [BASE_TIME] * 3


def test_text_only_in_attributed_body_is_decoded(builder: ChatDbBuilder) -> None:
    """Ventura+ rows with text NULL: the body comes from the typedstream, edge cases included."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    long_text = "NSString is just a word here. " + "🐢 slow and steady " * 4000  # > 64 KB UTF-8
    builder.message(chat, None, body="plain")
    builder.message(chat, None, body="𝖍𝖊𝖑𝖑𝖔 ↄ")
    builder.message(chat, None, body=long_text)
    found, stats = read(builder)
    assert [t for _, t in found[ALICE]] == ["plain", "𝖍𝖊𝖑𝖑𝖔 ↄ", long_text.strip()]
    assert stats.text_from_attributed_body == 3


KIND_CASES = [
    ("tapback", {"text": "Loved “hi”", "associated_message_type": 2000, "associated_message_guid": "p:0/X"}),
    ("tapback", {"text": "Removed a like", "associated_message_type": 3001}),
    ("sticker", {"text": None, "associated_message_type": 1000}),
    ("poll_vote", {"text": None, "associated_message_type": 4000}),
    ("system_event", {"text": None, "item_type": 2, "group_title": "New name"}),
    ("unsent", {"text": None, "date_retracted": 700_000_000_000_000_000}),
    ("failed_send", {"text": "never arrived", "error": 4}),
    ("app_message", {"text": "\ufffd", "balloon_bundle_id": "com.apple.Handwriting.HandwritingProvider"}),
    ("attachment_only", {"text": "\ufffc", "cache_has_attachments": 1}),
    ("audio", {"text": "\ufffc", "is_audio_message": 1, "cache_has_attachments": 1}),
    ("sms_reaction", {"text": "Liked “see you at 8”"}),
    ("empty", {"text": ""}),
]


@pytest.mark.parametrize(("reason", "columns"), KIND_CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(KIND_CASES)])
def test_non_utterances_are_left_out_and_counted(builder: ChatDbBuilder, reason: str, columns: dict) -> None:
    """Each kind that is not something a person wrote is excluded under its own reason."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, "a real message")
    text = columns.pop("text")
    builder.message(chat, text, **columns)
    found, stats = read(builder)
    assert [t for _, t in found[ALICE]] == ["a real message"]
    assert dict(stats.excluded) == {reason: 1}


def test_attachments_become_placeholders_when_asked(builder: ChatDbBuilder) -> None:
    """attachments = placeholder keeps attachment-only messages as a marker; U+FFFC never leaks."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, "\ufffc", cache_has_attachments=1)
    builder.message(chat, "\ufffcLook at this", cache_has_attachments=1)
    found, _ = read(builder, ReaderOptions(attachments="placeholder", attachment_placeholder="<photo>"))
    assert [t for _, t in found[ALICE]] == ["<photo>", "Look at this"]


def test_url_preview_keeps_the_url(builder: ChatDbBuilder) -> None:
    """A link preview balloon is an utterance: its text is the URL."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, "https://example.com/escher", balloon_bundle_id="com.apple.messages.URLBalloonProvider")
    found, _ = read(builder)
    assert [t for _, t in found[ALICE]] == ["https://example.com/escher"]


def test_edited_message_carries_its_final_text(builder: ChatDbBuilder) -> None:
    """An edited row: `text` may hold the original; the output is the final version."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    history = summary_info.build(parts=1, edits={0: [(700_000_000.0, "helo"), (700_000_010.0, "hello")]})
    builder.message(
        chat, "helo", body="hello", date_edited=700_000_010_000_000_000, message_summary_info=history
    )
    found, _ = read(builder)
    assert [t for _, t in found[ALICE]] == ["hello"]


def test_macos_26_unsend_recorded_only_in_summary_info(builder: ChatDbBuilder) -> None:
    """macOS 26 leaves date_retracted 0 and records the unsend in message_summary_info."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, "stays")
    builder.message(chat, None, date_edited=1, message_summary_info=summary_info.build(parts=1, unsent=[0]))
    found, stats = read(builder)
    assert [t for _, t in found[ALICE]] == ["stays"] and stats.excluded["unsent"] == 1


def test_partly_unsent_message_keeps_the_other_parts(builder: ChatDbBuilder) -> None:
    """Of a two-part message whose second part was unsent, the first part remains."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    blob = encode(
        "keep this gone",
        runs=[({"__kIMMessagePartAttributeName": 0}, 10), ({"__kIMMessagePartAttributeName": 1}, 4)],
    )
    info = summary_info.build(parts=2, unsent=[1])
    builder.message(chat, None, attributedBody=blob, message_summary_info=info)
    found, _ = read(builder)
    assert [t for _, t in found[ALICE]] == ["keep this"]


def test_undecodable_blob_is_counted_not_fatal(builder: ChatDbBuilder) -> None:
    """A damaged attributedBody drops that message only, under `undecodable`."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    builder.message(chat, None, attributedBody=b"\x04\x0bstreamtyped\x81\xe8\x03garbage")
    builder.message(chat, "fine")
    found, stats = read(builder)
    assert [t for _, t in found[ALICE]] == ["fine"] and stats.excluded["undecodable"] == 1


def test_filters_by_chat_name_handle_and_dates(builder: ChatDbBuilder) -> None:
    """include/exclude match identifier, handle or contact name; dates: start in, end out."""
    alice, bob = builder.handle(ALICE), builder.handle(BOB)
    a = builder.chat(ALICE, [alice])
    b = builder.chat(BOB, [bob])
    g = builder.chat("chat7", [alice, bob], group=True, display_name="Trio")
    for chat in (a, b, g):
        builder.message(chat, "early", at=BASE_TIME)
        builder.message(chat, "on start", at=BASE_TIME + 86400)
        builder.message(chat, "on end", at=BASE_TIME + 2 * 86400)
    builder.close()
    contacts = ContactBook.from_contacts([Contact(first="Alice", phones=(ALICE,))])

    def kept(**options: object) -> dict[str, list[str]]:
        with open_chat_db(builder.path) as conn:
            reader = ChatDbReader(conn, ReaderOptions(**options), contacts)  # type: ignore[arg-type]
            return {c.identifier: [m.text for m in msgs] for c, msgs in reader.conversations()}

    assert set(kept(include_chats=("alice",))) == {ALICE, "chat7"}
    assert set(kept(include_chats=("trio",))) == {"chat7"}
    assert set(kept(exclude_chats=(BOB,))) == {ALICE}
    assert set(kept(groups=False)) == {ALICE, BOB}
    window = kept(start=BASE_TIME + 86400, end=BASE_TIME + 2 * 86400)
    assert window[ALICE] == ["on start"]


def test_real_apple_database_rows_decode(shared_fixtures: Path) -> None:
    """Apple's own database (text NULL on both rows) opens and its blobs decode to the oracles."""
    db = shared_fixtures / "imessage-exporter-test.db"
    with open_chat_db(db) as conn:
        rows = dict(conn.execute("SELECT ROWID, attributedBody FROM message"))
    assert typedstream.decode_text(rows[452567]) == "I’m going to try to eat as quick as possible and then come over"
    assert typedstream.decode_text(rows[123445]).startswith("https://www.ghacks.net/2020/01/23/")
    assert os.stat(db).st_size > 0


def test_edited_message_without_a_blob_takes_the_last_version(builder: ChatDbBuilder) -> None:
    """`text` holds the original and there is no attributedBody: the edit history decides."""
    chat = builder.chat(ALICE, [builder.handle(ALICE)])
    history = summary_info.build(parts=1, edits={0: [(700_000_000.0, "orignal"), (700_000_010.0, "original")]})
    builder.message(chat, "orignal", date_edited=700_000_010_000_000_000, message_summary_info=history)
    found, _ = read(builder)
    assert [t for _, t in found[ALICE]] == ["original"]
