"""The built-in demo database: deterministic, Apple's layout, every message kind, and a script
that agrees with what is in the database."""

from __future__ import annotations

import hashlib
import plistlib
import re
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from imessage_finetune.chatdb.apple_schema import create_schema
from imessage_finetune.chatdb.contacts import ContactBook
from imessage_finetune.chatdb.typedstream import decode_text
from imessage_finetune.demo import DEMO_VERSION, DemoPaths, build_demo
from imessage_finetune.demo_script import (
    DEMO_CHATS,
    DEMO_HANDLES,
    DEMO_MESSAGES,
    EXCLUDED_REASONS,
    KINDS,
)

# The rows' digest per DEMO_VERSION: a change to the generated rows needs a new DEMO_VERSION.
DUMP_DIGESTS = {
    "1": "7a5c2f1ca1d0731112847b2cde3c7a1404bd6d561d1f8212d2f70b2949cab155",
}

TORTOISE = {"+15555550101", "tortoise@example.com"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoPaths:
    return build_demo(tmp_path_factory.mktemp("demo") / "source")


@pytest.fixture(scope="module")
def db(demo: DemoPaths) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{demo.chat_db}?mode=ro", uri=True)
    yield conn
    conn.close()


def _count(db: sqlite3.Connection, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def _tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {name: [c[1] for c in conn.execute(f"PRAGMA table_info({name})")] for name in names}


def _rows_digest(path: Path) -> str:
    """sha256 of every row of Apple's tables (not SQLite's own), stable across SQLite versions."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        for table in sorted(_tables(conn)):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid"):
                digest.update(repr((table, row)).encode())
        return digest.hexdigest()
    finally:
        conn.close()


# --- the files --------------------------------------------------------------------------


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    """Building in two folders gives the same bytes for both databases."""
    first = build_demo(tmp_path / "one")
    second = build_demo(tmp_path / "two")
    assert first.chat_db.read_bytes() == second.chat_db.read_bytes()
    assert first.addressbook.read_bytes() == second.addressbook.read_bytes()


def test_build_creates_a_private_folder_and_leaves_only_the_two_files(tmp_path: Path) -> None:
    """The folder is created 0700; a rebuild replaces the files and leaves no temp or journal."""
    folder = tmp_path / "nested" / "demo"
    paths = build_demo(folder)
    build_demo(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [paths.chat_db.name, paths.addressbook.name]
    )
    assert paths == DemoPaths(folder / "chat.db", folder / "AddressBook-v22.abcddb")


def test_build_is_fast(tmp_path: Path) -> None:
    """`doit train` builds the demo on every fresh run: it takes well under a second."""
    start = time.perf_counter()
    build_demo(tmp_path)
    assert time.perf_counter() - start < 1.0


def test_demo_version_matches_the_generated_rows(demo: DemoPaths) -> None:
    """Changing the generated rows without bumping DEMO_VERSION (and this digest) fails."""
    assert DEMO_VERSION in DUMP_DIGESTS, f"record the dump digest of DEMO_VERSION {DEMO_VERSION}"
    assert _rows_digest(demo.chat_db) == DUMP_DIGESTS[DEMO_VERSION], (
        "the demo rows changed: bump DEMO_VERSION and record the new digest here"
    )


def test_database_settings_are_those_of_a_real_chat_db(db: sqlite3.Connection) -> None:
    """4096-byte pages, a rollback journal (no WAL left beside it), Apple's properties rows."""
    assert db.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    properties = dict(db.execute("SELECT key, value FROM _SqliteDatabaseProperties"))
    assert properties["_ClientVersion"] == "18015"
    assert int(properties["counter_in_all"]) + int(properties["counter_out_all"]) == len(
        DEMO_MESSAGES
    )


def test_schema_equals_apples_macos_15_schema(db: sqlite3.Connection) -> None:
    """Same tables, same columns in the same order, same indexes and triggers as Apple's DDL."""
    reference = sqlite3.connect(":memory:")
    create_schema(reference, "15")
    assert _tables(db) == _tables(reference)
    objects = (
        "SELECT type, name FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
    assert db.execute(objects).fetchall() == reference.execute(objects).fetchall()


# --- chats and handles ------------------------------------------------------------------


def test_chats_one_to_one_and_groups(db: sqlite3.Connection) -> None:
    """At least 12 chats: 8+ one-to-one (style 45) and 3+ groups (style 43)."""
    styles = Counter(style for (style,) in db.execute("SELECT style FROM chat"))
    assert sum(styles.values()) >= 12
    assert styles[45] >= 8 and styles[43] >= 3
    assert set(styles) == {43, 45}


def test_one_sms_chat_with_a_phone_handle(db: sqlite3.Connection) -> None:
    """Exactly one chat is SMS, one-to-one with a phone number; the rest are iMessage."""
    rows = db.execute(
        "SELECT c.service_name, c.style, h.id, h.service FROM chat c "
        "JOIN chat_handle_join j ON j.chat_id = c.ROWID JOIN handle h ON h.ROWID = j.handle_id "
        "WHERE c.service_name = 'SMS'"
    ).fetchall()
    assert len(rows) == 1
    service, style, address, handle_service = rows[0]
    assert (style, handle_service) == (45, "SMS") and re.fullmatch(r"\+155555501\d\d", address)
    assert _count(db, "SELECT count(*) FROM message WHERE service = 'SMS'") >= 5
    services = {s for (s,) in db.execute("SELECT DISTINCT service_name FROM chat")}
    assert services == {"SMS", "iMessage"}


def test_handles_are_fictional_phones_and_emails(db: sqlite3.Connection) -> None:
    """Phone handles are E.164 in the 555-01xx range, the others email addresses."""
    for (address,) in db.execute("SELECT id FROM handle"):
        phone = re.fullmatch(r"\+155555501\d\d", address)
        assert phone or re.fullmatch(r"[a-z]+@example\.\w+", address)
    assert _count(db, "SELECT count(*) FROM handle WHERE id LIKE '%@%'") >= 3


def test_contacts_name_every_handle_but_one(db: sqlite3.Connection, demo: DemoPaths) -> None:
    """The address book resolves all handles except one phone number; the Tortoise is "Tortoise"."""
    book_conn = sqlite3.connect(f"file:{demo.addressbook}?mode=ro", uri=True)
    try:
        book = ContactBook.from_connections([book_conn])
    finally:
        book_conn.close()
    names = {address: book.name_for(address) for (address,) in db.execute("SELECT id FROM handle")}
    unresolved = [address for address, name in names.items() if name is None]
    assert len(unresolved) == 1 and unresolved[0].startswith("+1555")
    assert {names[address] for address in TORTOISE} == {"Tortoise"}


def test_participants_exclude_the_owner_and_members_who_left(db: sqlite3.Connection) -> None:
    """chat_handle_join lists the current participants as scripted; the owner is never a handle."""
    rows = db.execute(
        "SELECT c.guid, h.id FROM chat_handle_join j JOIN chat c ON c.ROWID = j.chat_id "
        "JOIN handle h ON h.ROWID = j.handle_id"
    ).fetchall()
    scripted = {(chat.guid, address) for chat in DEMO_CHATS for address in chat.participants}
    assert set(rows) == scripted
    owner = "SELECT count(*) FROM handle WHERE id IN ('+15555550100', 'me@example.com')"
    assert _count(db, owner) == 0


# --- messages ---------------------------------------------------------------------------


def test_a_few_hundred_messages(db: sqlite3.Connection) -> None:
    """Between 300 and 500 message rows, as many as the script has."""
    total = _count(db, "SELECT count(*) FROM message")
    assert 300 <= total <= 500
    assert total == len(DEMO_MESSAGES)


def test_every_scripted_message_is_in_the_database(db: sqlite3.Connection) -> None:
    """Each scripted message has its ROWID, GUID, direction and exactly its scripted chats."""
    rows = {
        guid: (rowid, is_from_me, handle)
        for rowid, guid, is_from_me, handle in db.execute(
            "SELECT m.ROWID, m.guid, m.is_from_me, h.id FROM message m "
            "LEFT JOIN handle h ON h.ROWID = m.handle_id"
        )
    }
    chats: dict[str, set[str]] = {}
    for guid, chat_guid in db.execute(
        "SELECT m.guid, c.guid FROM chat_message_join j JOIN message m ON m.ROWID = j.message_id "
        "JOIN chat c ON c.ROWID = j.chat_id"
    ):
        chats.setdefault(guid, set()).add(chat_guid)
    chat_guid = {chat.key: chat.guid for chat in DEMO_CHATS}
    for message in DEMO_MESSAGES:
        rowid, is_from_me, handle = rows[message.guid]
        assert rowid == message.rowid
        assert bool(is_from_me) == message.is_from_me
        if not message.is_from_me:
            assert handle == message.sender
        assert chats.get(message.guid, set()) == {chat_guid[key] for key in message.chats}


def test_guids_are_uppercase_uuids(db: sqlite3.Connection) -> None:
    """Message GUIDs look like Apple's: unique uppercase UUIDs."""
    guids = [guid for (guid,) in db.execute("SELECT guid FROM message")]
    assert len(set(guids)) == len(guids)
    assert all(re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", g) for g in guids)


def test_bodies_decode_to_the_scripted_text(db: sqlite3.Connection) -> None:
    """Every attributedBody decodes to the scripted body; `text`, when set, equals it too."""
    body = {m.guid: m.body for m in DEMO_MESSAGES}
    checked = 0
    for guid, text, blob in db.execute("SELECT guid, text, attributedBody FROM message"):
        if blob is not None:
            assert decode_text(blob) == body[guid]
            checked += 1
        if text is not None:
            assert text == body[guid]
    assert checked > len(DEMO_MESSAGES) * 0.8


def test_about_a_third_of_bodies_are_only_in_attributed_body(db: sqlite3.Connection) -> None:
    """As on Ventura and later, about a third of ordinary messages have `text` NULL."""
    ordinary = "FROM message WHERE item_type = 0 AND associated_message_type = 0"
    total = _count(db, f"SELECT count(*) {ordinary}")
    blob_only = f"SELECT count(*) {ordinary} AND text IS NULL AND attributedBody IS NOT NULL"
    only_blob = _count(db, blob_only)
    assert 0.25 <= only_blob / total <= 0.4


KIND_QUERIES = {
    "plain text": "text <> '' AND text NOT LIKE char(65532) || '%' AND item_type = 0 AND associated_message_type = 0 AND balloon_bundle_id IS NULL",
    "body only in attributedBody": "text IS NULL AND attributedBody IS NOT NULL AND date_edited = 0 AND item_type = 0",
    "body over 1 KB": "text IS NULL AND length(attributedBody) > 1100",
    "astral emoji": "instr(text, '🐢') > 0",
    "astral letters": "instr(attributedBody, CAST('𝖕𝖆𝖗𝖆𝖉𝖔𝖝' AS BLOB)) > 0 AND text IS NULL",
    "the word NSString in a body": "instr(attributedBody, CAST('NSString objects' AS BLOB)) > 0 AND text IS NULL",
    "own 1:1 row naming the recipient": "is_from_me = 1 AND handle_id <> 0 AND ROWID IN (SELECT message_id FROM chat_message_join j JOIN chat c ON c.ROWID = j.chat_id WHERE c.style = 45)",
    "own 1:1 row from another device": "is_from_me = 1 AND handle_id = 0 AND ROWID IN (SELECT message_id FROM chat_message_join j JOIN chat c ON c.ROWID = j.chat_id WHERE c.style = 45)",
    "loved": "associated_message_type = 2000 AND text LIKE 'Loved “%”' AND associated_message_guid LIKE 'p:0/%'",
    "liked": "associated_message_type = 2001 AND text LIKE 'Liked “%”'",
    "disliked": "associated_message_type = 2002 AND text LIKE 'Disliked “%”'",
    "laughed": "associated_message_type = 2003 AND text LIKE 'Laughed at “%”'",
    "emphasized": "associated_message_type = 2004 AND text LIKE 'Emphasized “%”'",
    "questioned": "associated_message_type = 2005 AND text LIKE 'Questioned “%”'",
    "custom emoji tapback": "associated_message_type = 2006 AND associated_message_emoji IS NOT NULL",
    "removed like": "associated_message_type = 3001 AND text LIKE 'Removed a like from “%”'",
    "sticker": "associated_message_type = 1000 AND ROWID IN (SELECT message_id FROM message_attachment_join j JOIN attachment a ON a.ROWID = j.attachment_id WHERE a.is_sticker = 1)",
    "poll": "balloon_bundle_id LIKE '%com.apple.messages.Polls'",
    "poll vote": "associated_message_type = 4000 AND associated_message_guid IS NOT NULL",
    "member added": "item_type = 1 AND group_action_type = 0 AND other_handle <> 0",
    "group renamed": "item_type = 2 AND group_title <> ''",
    "member left": "item_type = 3 AND group_action_type = 0",
    "unsent (date_retracted)": "date_retracted <> 0 AND text IS NULL AND attributedBody IS NULL",
    "unsent (macOS 26)": "date_retracted = 0 AND date_edited <> 0 AND attributedBody IS NULL AND message_summary_info IS NOT NULL",
    "edited": "date_edited <> 0 AND text IS NULL AND attributedBody IS NOT NULL AND message_summary_info IS NOT NULL",
    "attachment only": "text = char(65532) AND cache_has_attachments = 1 AND is_audio_message = 0 AND associated_message_type = 0 AND ROWID IN (SELECT message_id FROM message_attachment_join)",
    "text and attachment": "text LIKE char(65532) || '_%' AND cache_has_attachments = 1",
    "URL preview": "balloon_bundle_id = 'com.apple.messages.URLBalloonProvider' AND text LIKE 'https://%'",
    "audio": "is_audio_message = 1 AND text = char(65532) AND cache_has_attachments = 1",
    "SMS reaction text": "service = 'SMS' AND associated_message_type = 0 AND text LIKE 'Liked “%”'",
    "failed send": "error <> 0 AND is_from_me = 1",
    "in two chats": "ROWID IN (SELECT message_id FROM chat_message_join GROUP BY message_id HAVING count(*) = 2)",
    "orphan": "ROWID NOT IN (SELECT message_id FROM chat_message_join)",
    "empty": "text = '' AND attributedBody IS NULL AND item_type = 0",
    "inline reply": "thread_originator_guid IN (SELECT guid FROM message)",
    "late insert": "date < (SELECT max(date) FROM message AS earlier WHERE earlier.ROWID < message.ROWID)",
    "same date as another row": "date IN (SELECT date FROM message GROUP BY date HAVING count(*) = 2)",
}


@pytest.mark.parametrize("kind", KIND_QUERIES)
def test_each_message_kind_is_in_the_database(db: sqlite3.Connection, kind: str) -> None:
    """Each message kind a reader must handle has at least one row with Apple's column values."""
    assert _count(db, f"SELECT count(*) FROM message WHERE {KIND_QUERIES[kind]}") >= 1


def test_owner_rows_in_groups_have_no_handle(db: sqlite3.Connection) -> None:
    """The owner's rows in group chats all have handle_id = 0."""
    in_groups = (
        "FROM message WHERE is_from_me = 1 AND ROWID IN (SELECT message_id FROM chat_message_join j "
        "JOIN chat c ON c.ROWID = j.chat_id WHERE c.style = 43)"
    )
    assert _count(db, f"SELECT count(*) {in_groups}") >= 10
    assert _count(db, f"SELECT count(*) {in_groups} AND handle_id <> 0") == 0


def test_edit_and_unsend_histories(db: sqlite3.Connection) -> None:
    """The edited row lists its versions in `ec`; both unsent rows list their part in `rp`."""
    summary = "SELECT message_summary_info FROM message WHERE"
    (edited,) = db.execute(f"{summary} date_edited <> 0 AND attributedBody IS NOT NULL").fetchone()
    info = plistlib.loads(edited)
    assert info["ep"] == [0]
    versions = [decode_text(version["t"]) for version in info["ec"]["0"]]
    assert versions == ["see you thrusday", "see you thursday"]
    unsent = db.execute(
        f"{summary} attributedBody IS NULL AND (date_retracted <> 0 OR date_edited <> 0)"
    ).fetchall()
    assert len(unsent) == 2
    assert all(plistlib.loads(blob)["rp"] == [0] for (blob,) in unsent)


def test_dates_span_a_year_with_bursts_and_gaps(db: sqlite3.Connection) -> None:
    """Nanosecond dates spanning ~a year; within chats, gaps of minutes and of hours or days."""
    dates = [d for (d,) in db.execute("SELECT date FROM message")]
    assert min(dates) > 10**17
    assert 330 * 86400 <= (max(dates) - min(dates)) / 1e9 <= 400 * 86400
    gaps = []
    for (chat_id,) in db.execute("SELECT ROWID FROM chat"):
        chat_dates = [
            d for (d,) in db.execute(
                "SELECT message_date FROM chat_message_join WHERE chat_id = ? ORDER BY message_date",
                (chat_id,),
            )
        ]
        gaps += [(b - a) / 1e9 for a, b in zip(chat_dates, chat_dates[1:])]
    assert sum(g < 300 for g in gaps) > len(gaps) / 2
    assert sum(g > 6 * 3600 for g in gaps) >= 30
    assert sum(g > 7 * 86400 for g in gaps) >= 10


def test_join_dates_copy_message_dates(db: sqlite3.Connection) -> None:
    """chat_message_join.message_date equals message.date, as Apple's trigger keeps it."""
    mismatched = (
        "SELECT count(*) FROM chat_message_join j JOIN message m ON m.ROWID = j.message_id "
        "WHERE j.message_date <> m.date"
    )
    assert _count(db, mismatched) == 0


# --- the script -------------------------------------------------------------------------


def test_excluded_reasons_and_expected_texts_are_consistent() -> None:
    """Reasons come from the list; exactly the messages without a reason have an expected text."""
    for message in DEMO_MESSAGES:
        assert message.kind in KINDS
        assert (message.excluded_reason is None) == (message.expected_text is not None)
        if message.excluded_reason is not None:
            assert message.excluded_reason in EXCLUDED_REASONS
        else:
            assert message.expected_text and "\ufffc" not in message.expected_text
    assert {m.excluded_reason for m in DEMO_MESSAGES} - {None} == set(EXCLUDED_REASONS)


def test_expected_texts_of_special_kinds() -> None:
    """Edits give the final text, captions lose the U+FFFC, link previews keep the URL."""
    by_kind = {m.kind: m for m in DEMO_MESSAGES}
    assert by_kind["edited"].expected_text == "see you thursday"
    assert by_kind["text_attachment"].expected_text == "look at this"
    assert by_kind["url_preview"].expected_text.startswith("https://")
    assert by_kind["orphan"].chats == () and by_kind["orphan"].excluded_reason == "orphan"


def test_owner_and_tortoise_have_enough_messages_for_a_voice() -> None:
    """The owner keeps 100+ messages; the Tortoise 40+ across at least 4 conversations."""
    kept = [m for m in DEMO_MESSAGES if m.expected_text is not None]
    assert sum(m.is_from_me for m in kept) >= 100
    tortoise = [m for m in kept if m.sender in TORTOISE]
    assert len(tortoise) >= 40
    assert len({chat for m in tortoise for chat in m.chats}) >= 4


def test_voices_are_consistent() -> None:
    """The owner writes in lower case without exclamation marks; the Tortoise in sentences."""
    for message in DEMO_MESSAGES:
        text = message.expected_text
        if text is None:
            continue
        if message.is_from_me:
            assert text == text.lower() and "!" not in text, text
        elif message.sender in TORTOISE:
            assert text[0].isupper() or text[0] == '"', text


def test_handles_and_chats_are_consistent() -> None:
    """Scripted senders are handles of their chats' service; 1:1 chats have one participant."""
    handles = {(h.address, h.service) for h in DEMO_HANDLES}
    services = {chat.key: chat.service for chat in DEMO_CHATS}
    for chat in DEMO_CHATS:
        assert chat.is_group or len(chat.participants) == 1
        assert all((address, chat.service) in handles for address in chat.participants)
    for message in DEMO_MESSAGES:
        if message.sender is not None:
            assert (message.sender, message.service) in handles
        assert all(services[key] == message.service for key in message.chats)
