"""Contact names from an iPhone's own Contacts database, `AddressBook.sqlitedb`.

iOS keeps the older AddressBook schema, not macOS's Core Data store: one row per card in
`ABPerson` (`First`, `Last`, `Nickname`, `Organization`...) and its numbers and addresses in
`ABMultiValue` (`record_id` = the card's ROWID, `property` 3 = phone, 4 = email, `value`).
Cards become the same `Contact` values as macOS cards, so a handle resolves to the same name
whichever database it came from.
"""

from __future__ import annotations

import sqlite3

from imessage_finetune.errors import ContactsError
from imessage_finetune.sources.contacts import Contact

PHONE_PROPERTY = 3  # kABPersonPhoneProperty
EMAIL_PROPERTY = 4  # kABPersonEmailProperty
NAME_COLUMNS = ("First", "Last", "Nickname", "Organization")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]).lower() for row in conn.execute(f"PRAGMA table_info({table})")}


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def read_ios_contacts(conn: sqlite3.Connection, where: str = "the AddressBook.sqlitedb") -> list[Contact]:
    """Every card of an iOS AddressBook database (SELECTs only), in ROWID order."""
    try:
        tables = {str(r[0]).lower() for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "abperson" not in tables:
            raise ContactsError(f"{where} is not an iOS Contacts database: it has no ABPerson table; make a new backup")
        present = _columns(conn, "ABPerson")
        names_sql = ", ".join(c if c.lower() in present else f"NULL AS {c}" for c in NAME_COLUMNS)
        cards = {
            row[0]: tuple(_text(v) for v in row[1:])
            for row in conn.execute(f"SELECT ROWID, {names_sql} FROM ABPerson ORDER BY ROWID")
        }
        phones: dict[int, list[str]] = {}
        emails: dict[int, list[str]] = {}
        if "abmultivalue" in tables and {"record_id", "property", "value"} <= _columns(conn, "ABMultiValue"):
            sql = (
                "SELECT record_id, property, value FROM ABMultiValue "
                "WHERE property IN (?, ?) AND value IS NOT NULL ORDER BY record_id, rowid"
            )
            for record, prop, value in conn.execute(sql, (PHONE_PROPERTY, EMAIL_PROPERTY)):
                (phones if prop == PHONE_PROPERTY else emails).setdefault(record, []).append(_text(value))
    except sqlite3.DatabaseError as exc:
        raise ContactsError(f"cannot read {where} as an iOS Contacts database: {exc}") from None
    return [
        Contact(
            first=first,
            last=last,
            nickname=nickname,
            organization=organization,
            phones=tuple(phones.get(rowid, ())),
            emails=tuple(emails.get(rowid, ())),
        )
        for rowid, (first, last, nickname, organization) in cards.items()
    ]
