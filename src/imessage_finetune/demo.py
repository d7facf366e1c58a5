"""The built-in demo: a realistic Messages `chat.db` and Contacts database, built in code.

The rows follow what macOS 15 writes (Apple's own DDL from `chatdb.apple_schema`, the column
values of `../shared/notes/chatdb.md` §5): bodies only in `attributedBody`, the owner's rows
with `handle_id = 0`, tapbacks, stickers, polls, group events, edits, unsends, attachments,
link previews, an SMS chat, a failed send, an orphan, late iCloud inserts. What a correct
reader must make of each row is recorded in `demo_script.DEMO_MESSAGES`.

The bytes are the same on every run (no clock, fixed insertion order, fixed page size), so
the pipeline's fingerprints stay stable; bump `DEMO_VERSION` whenever they change.
"""

from __future__ import annotations

import plistlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from . import artifacts
from .atomic import atomic_path
from .chatdb import summary_info, typedstream
from .chatdb.apple_schema import create_schema
from .chatdb.contacts import write_addressbook
from .chatdb.schema import POLL_VOTE as POLL_VOTE_ASSOCIATION
from .chatdb.schema import STICKER as STICKER_ASSOCIATION
from .chatdb.schema import URL_BALLOON
from .demo_script import (
    ATTRIBUTED,
    AUDIO,
    DEMO_CHATS,
    DEMO_CONTACTS,
    DEMO_HANDLES,
    DEMO_MESSAGES,
    EDITED,
    FAILED_SEND,
    GROUP_RENAMED,
    MEMBER_ADDED,
    MEMBER_LEFT,
    OWNER_EMAIL,
    OWNER_PHONE,
    POLL,
    POLL_VOTE,
    STICKER,
    TAPBACK,
    TEXT_ATTACHMENT,
    UNSENT,
    UNSENT_26,
    URL_PREVIEW,
    DemoAttachment,
    DemoChat,
    DemoMessage,
    demo_guid,
)

DEMO_VERSION = "1"
CHAT_DB_NAME = artifacts.DEMO_CHAT_DB
ADDRESSBOOK_NAME = artifacts.DEMO_ADDRESSBOOK

# Values a macOS 15 Messages database carries.
_CLIENT_VERSION = "18015"
_MESSAGE_VERSION = 10
_TRANSFER_FINISHED = 5
_SEND_ERROR = 4  # "not delivered"
_CHAT_STATE = 3
_POLLS_BALLOON = (
    "com.apple.messages.MSMessageExtensionBalloonPlugin:0000000000:com.apple.messages.Polls"
)
_FILE_TRANSFER_KEY = "__kIMFileTransferGUIDAttributeName"
_ITEM_TYPES = {MEMBER_ADDED: 1, GROUP_RENAMED: 2, MEMBER_LEFT: 3}
_NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class DemoPaths:
    """Where `build_demo` wrote the demo databases."""

    chat_db: Path
    addressbook: Path


def build_demo(folder: Path) -> DemoPaths:
    """Write chat.db and AddressBook-v22.abcddb into folder (created if missing, mode 0o700),
    byte-identical on every run; each file written to a temp name in the same folder and
    renamed into place."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = DemoPaths(folder / CHAT_DB_NAME, folder / ADDRESSBOOK_NAME)
    with atomic_path(paths.chat_db) as publication:
        _write_chat_db(publication.temp)
    with atomic_path(paths.addressbook) as publication:
        write_addressbook(publication.temp, DEMO_CONTACTS)
    return paths


def _write_chat_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA page_size = 4096")
        # A real chat.db is WAL; a -wal file left beside the demo would only be noise.
        conn.execute("PRAGMA journal_mode = DELETE")
        # The file is synced once, before it is renamed into place (atomic_path).
        conn.execute("PRAGMA synchronous = OFF")
        create_schema(conn, "15")
        with conn:
            _insert_properties(conn)
            _insert_handles(conn)
            _insert_chats(conn)
            attachments = 0
            for message in sorted(DEMO_MESSAGES, key=lambda m: m.rowid):
                _insert_message(conn, message)
                if message.attachment is not None:
                    attachments += 1
                    _insert_attachment(conn, message, message.attachment, attachments)
                for chat in _chats_of(message):
                    join = {"chat_id": chat.rowid, "message_id": message.rowid}
                    _insert(conn, "chat_message_join", {**join, "message_date": message.date})
        conn.execute("ANALYZE")  # real databases carry sqlite_stat1
    finally:
        conn.close()


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, object]) -> None:
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))


def _chats_of(message: DemoMessage) -> list[DemoChat]:
    return [chat for chat in DEMO_CHATS if chat.key in message.chats]


def _insert_properties(conn: sqlite3.Connection) -> None:
    incoming = sum(1 for m in DEMO_MESSAGES if not m.is_from_me)
    outgoing = len(DEMO_MESSAGES) - incoming
    for key, value in (
        ("counter_in_all", incoming),
        ("counter_out_all", outgoing),
        ("counter_in_lifetime", incoming),
        ("counter_out_lifetime", outgoing),
        ("counter_last_reset", 0),
        ("_ClientVersion", _CLIENT_VERSION),
        ("__CSDBRecordSequenceNumber", len(DEMO_MESSAGES) * 3),
    ):
        _insert(conn, "_SqliteDatabaseProperties", {"key": key, "value": str(value)})


def _insert_handles(conn: sqlite3.Connection) -> None:
    for handle in DEMO_HANDLES:
        sms = handle.service == "SMS"
        # One person's handles share it (the Tortoise has a number and an address).
        person = demo_guid(f"person-{handle.person}") if handle.in_contacts else None
        _insert(conn, "handle", {
            "ROWID": handle.rowid,
            "id": handle.address,
            "country": "us",
            "service": handle.service,
            "uncanonicalized_id": handle.address.removeprefix("+1") if sms else None,
            "person_centric_id": person,
        })  # fmt: skip


def _account(service: str) -> tuple[str, str]:
    """The owner's account login and its GUID for a service."""
    login = f"P:{OWNER_PHONE}" if service == "SMS" else f"E:{OWNER_EMAIL}"
    return login, demo_guid(f"account-{service}")


def _my_address(chat: DemoChat) -> str:
    """The owner's address a chat reaches: the email address for email contacts, else the number."""
    return OWNER_EMAIL if not chat.is_group and "@" in chat.identifier else OWNER_PHONE


def _insert_chats(conn: sqlite3.Connection) -> None:
    last_date = {chat.key: 0 for chat in DEMO_CHATS}
    for message in DEMO_MESSAGES:
        for key in message.chats:
            last_date[key] = max(last_date[key], message.date)
    handle_rowid = {(h.address, h.service): h.rowid for h in DEMO_HANDLES}
    for chat in DEMO_CHATS:
        login, account_guid = _account(chat.service)
        group_id = demo_guid(f"group-{chat.key}")
        _insert(conn, "chat", {
            "ROWID": chat.rowid,
            "guid": chat.guid,
            "style": chat.style,
            "state": _CHAT_STATE,
            "account_id": account_guid,
            "chat_identifier": chat.identifier,
            "service_name": chat.service,
            "room_name": chat.identifier if chat.is_group else None,
            "account_login": login,
            "last_addressed_handle": _my_address(chat),
            "display_name": chat.display_name,
            "group_id": group_id,
            "successful_query": 1,
            "original_group_id": group_id if chat.is_group else None,
            "last_read_message_timestamp": last_date[chat.key],
        })  # fmt: skip
        for address in chat.participants:
            _insert(conn, "chat_handle_join", {
                "chat_id": chat.rowid, "handle_id": handle_rowid[(address, chat.service)],
            })  # fmt: skip


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _keyed_archive(classname: str, fields: dict[str, str | list[str]]) -> bytes:
    """A small NSKeyedArchiver bplist, the shape of Messages' `payload_data`."""
    objects: list[object] = ["$null"]

    def reference(value: object) -> plistlib.UID:
        objects.append(value)
        return plistlib.UID(len(objects) - 1)

    def class_reference(name: str) -> plistlib.UID:
        return reference({"$classname": name, "$classes": [name, "NSObject"]})

    root: dict[str, object] = {}
    reference(root)
    for name, value in fields.items():
        if isinstance(value, str):
            root[name] = reference(value)
        else:
            items = [reference(item) for item in value]
            root[name] = reference({"NS.objects": items, "$class": class_reference("NSArray")})
    root["$class"] = class_reference(classname)
    archive = {
        "$version": 100000,
        "$archiver": "NSKeyedArchiver",
        "$top": {"root": plistlib.UID(1)},
        "$objects": objects,
    }
    return plistlib.dumps(archive, fmt=plistlib.FMT_BINARY, sort_keys=False)


def _attributed_body(message: DemoMessage) -> bytes | None:
    """The typedstream Messages stores: one run per part, attachments as 1-unit runs."""
    body = message.body
    if not body:  # unsent, empty and system rows carry no archive
        return None
    if message.attachment is None:
        return typedstream.encode(body)
    file_run = {typedstream.PART_KEY: 0, _FILE_TRANSFER_KEY: message.attachment.guid}
    runs: list[tuple[dict[str, object], int]] = [(file_run, 1)]
    caption = body[1:]
    if caption:
        runs.append(({typedstream.PART_KEY: 1}, _utf16_len(caption)))
    return typedstream.encode(body, runs)


def _summary(message: DemoMessage) -> bytes | None:
    if message.kind in _ITEM_TYPES:
        return None
    if message.kind == EDITED:
        edits = {0: [(date / _NANOSECONDS, text) for date, text in message.versions]}
        return summary_info.build(parts=1, edits=edits)
    if message.kind in (UNSENT, UNSENT_26):
        return summary_info.build(parts=1, unsent=(0,))
    return summary_info.build()


def _insert_message(conn: sqlite3.Connection, message: DemoMessage) -> None:
    kind = message.kind
    mine = message.is_from_me
    chat = next(iter(_chats_of(message)), None)
    login, account_guid = _account(message.service)
    text = None if kind in (ATTRIBUTED, EDITED) else message.body
    receipts = message.service == "iMessage" and chat is not None and not chat.is_group
    # Deterministic small delays: delivered within a second or two, read a little later.
    delay = message.rowid % 7
    read = message.date + (20 + 9 * delay) * _NANOSECONDS if (not mine or receipts) else 0
    row: dict[str, object] = {
        "ROWID": message.rowid,
        "guid": message.guid,
        "text": text,
        "handle_id": message.handle_id,
        "service": message.service,
        "account": login,
        "account_guid": account_guid,
        "attributedBody": _attributed_body(message),
        "version": _MESSAGE_VERSION,
        "date": message.date,
        "date_read": read,
        "date_delivered": (message.date + (1 + delay % 2) * _NANOSECONDS) if mine else 0,
        "is_delivered": 1,
        "is_finished": 1,
        "is_from_me": int(mine),
        "is_read": int(not mine or receipts),
        "is_sent": int(mine),
        "destination_caller_id": OWNER_PHONE if chat is None else _my_address(chat),
        "reply_to_guid": message.reply_to_guid,
        "part_count": 2 if kind == TEXT_ATTACHMENT else 1,
        "message_summary_info": _summary(message),
    }
    if kind in _ITEM_TYPES:
        row["item_type"] = _ITEM_TYPES[kind]
        row["other_handle"] = message.other_handle
        row["group_title"] = message.group_title
        row["part_count"] = 0
    if kind in (TAPBACK, STICKER, POLL_VOTE):
        row["associated_message_guid"] = f"p:0/{message.target_guid}"
        row["associated_message_type"] = {
            TAPBACK: message.association,
            STICKER: STICKER_ASSOCIATION,
            POLL_VOTE: POLL_VOTE_ASSOCIATION,
        }[kind]
        row["associated_message_range_length"] = _utf16_len(message.target_text or "")
        row["associated_message_emoji"] = message.emoji
    if message.thread_originator_guid is not None:
        row["thread_originator_guid"] = message.thread_originator_guid
        row["thread_originator_part"] = f"0:0:{_utf16_len(message.thread_originator_text or '')}"
    if kind == EDITED:
        row["date_edited"] = message.changed_at
    elif kind == UNSENT:
        row["date_retracted"] = message.changed_at
    elif kind == UNSENT_26:
        row["date_edited"] = message.changed_at  # macOS 26 leaves date_retracted at 0
    elif kind == URL_PREVIEW:
        row["balloon_bundle_id"] = URL_BALLOON
        row["was_data_detected"] = 1
        row["payload_data"] = _keyed_archive("LPLinkMetadata", {"URL": message.body or ""})
    elif kind == POLL:
        row["balloon_bundle_id"] = _POLLS_BALLOON
        question, *options = message.payload
        fields = {"question": question, "options": options}
        row["payload_data"] = _keyed_archive("PollMessage", fields)
    elif kind == AUDIO:
        row.update(is_audio_message=1, is_played=1, is_expirable=1)
        row["date_played"] = message.date + 90 * _NANOSECONDS
    _insert(conn, "message", row)
    if kind == FAILED_SEND:
        # Set afterwards, as Messages does once delivery fails: Apple's trigger records it.
        conn.execute(
            "UPDATE message SET error = ?, is_sent = 0, is_delivered = 0, date_delivered = 0, "
            "date_read = 0, is_read = 0 WHERE ROWID = ?",
            (_SEND_ERROR, message.rowid),
        )


def _insert_attachment(
    conn: sqlite3.Connection, message: DemoMessage, attachment: DemoAttachment, rowid: int
) -> None:
    created = message.date // _NANOSECONDS  # attachment dates are in seconds
    guid = attachment.guid
    if attachment.is_sticker:
        folder = f"~/Library/Messages/StickerCache/{guid[:8].lower()}-{guid}"
    else:
        folder = f"~/Library/Messages/Attachments/{guid[-2:].lower()}/{message.rowid % 100:02d}/{guid}"
    _insert(conn, "attachment", {
        "ROWID": rowid,
        "guid": attachment.guid,
        "created_date": created,
        "start_date": created,
        "filename": f"{folder}/{attachment.transfer_name}",
        "uti": attachment.uti,
        "mime_type": attachment.mime_type,
        "transfer_state": _TRANSFER_FINISHED,
        "is_outgoing": int(message.is_from_me),
        "transfer_name": attachment.transfer_name,
        "total_bytes": attachment.total_bytes,
        "is_sticker": int(attachment.is_sticker),
        "original_guid": attachment.guid,
    })  # fmt: skip
    # Apple's trigger on this join sets message.cache_has_attachments.
    _insert(conn, "message_attachment_join", {"message_id": message.rowid, "attachment_id": rowid})
