"""Contact names for Messages handles, from the macOS Contacts (AddressBook) databases.

`chat.db` knows people only by address: an E.164 phone number or an email address
(`handle.id`). Their names live in Contacts' Core Data stores, one
`AddressBook-v22.abcddb` at the top of `~/Library/Application Support/AddressBook`
and one per account under its `Sources/<UUID>/`. A card (`ZABCDRECORD`) owns its
numbers (`ZABCDPHONENUMBER.ZFULLNUMBER`) and addresses (`ZABCDEMAILADDRESS.ZADDRESS`)
through `ZOWNER`, and people type numbers in any format, with or without a country
code, so matching is done on normalised keys:

* emails: case-insensitive;
* phone numbers: the same digits; or, when one side lacks the country code (the two
  digit strings differ in length), the same last 10 digits, or the whole shorter
  number when it has 7 to 9 digits; a local number's trunk `0` (`06 12 34 56 78`,
  `030 1234567`) stands in for the country code;
* a handle that matches cards with two different names resolves to nothing rather
  than to a guess.

`read_contacts` opens the databases read-only like chat.db (`../shared/notes/chatdb.md` §8);
`ContactBook.from_connections` only runs SELECTs on connections it is given. The writer of
such databases, for tests and the demo, is `fixtures.addressbook`.
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from imessage_finetune.errors import ContactsError
from imessage_finetune.sources.chatdb.connection import ADDRESSBOOK, open_readonly

ADDRESSBOOK_FILENAME = "AddressBook-v22.abcddb"

RECORD_TABLE = "ZABCDRECORD"
PHONE_TABLE = "ZABCDPHONENUMBER"
EMAIL_TABLE = "ZABCDEMAILADDRESS"

# Phone numbers shorter than this are short codes: they only match exactly.
_MIN_PHONE_DIGITS = 7
_NATIONAL_DIGITS = 10
# Contacts stores a dial pause or wait as "," or ";": what follows is an extension.
_DIAL_PAUSES = ",;"
_PHONE_SYMBOLS = frozenset("+./")
# Unicode categories a typed phone number may contain besides digits: dashes,
# brackets, spaces and invisible format marks (copied numbers carry U+202A/U+202C).
_PHONE_SEPARATOR_CATEGORIES = frozenset({"Pd", "Ps", "Pe", "Zs", "Cf"})


@dataclass(frozen=True)
class Contact:
    """One Contacts card: its name fields and the addresses it owns."""

    first: str = ""
    last: str = ""
    nickname: str = ""
    organization: str = ""
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    @property
    def display_name(self) -> str:
        """'First Last', else nickname, else organization, else ''."""
        full = " ".join(part for part in (_clean(self.first), _clean(self.last)) if part)
        return full or _clean(self.nickname) or _clean(self.organization)


def default_addressbook_paths(home: Path | None = None) -> list[Path]:
    """Every AddressBook-v22.abcddb under ~/Library/Application Support/AddressBook.

    The top-level store and one per account (`Sources/*`), sorted, existing files only.
    """
    root = (Path.home() if home is None else home) / "Library" / "Application Support" / "AddressBook"
    try:
        candidates = [root / ADDRESSBOOK_FILENAME]
        sources = root / "Sources"
        if sources.is_dir():
            candidates += [source / ADDRESSBOOK_FILENAME for source in sources.iterdir()]
        return sorted(path for path in candidates if path.is_file())
    except PermissionError as exc:
        # macOS guards this folder; without access Python sees EPERM, not "missing".
        raise ContactsError(
            f"cannot look for Contacts databases in {root}: permission denied; grant Full Disk "
            "Access (or Contacts access) to your terminal and the app that launched it"
        ) from exc


def contacts_sources(explicit: list[Path] | None, home: Path | None = None) -> list[Path]:
    """The Contacts databases to read: the configured ones, or those macOS keeps (auto)."""
    if explicit is None:
        return default_addressbook_paths(home)
    return list(explicit)


def read_contacts(sources: Iterable[Path], busy_timeout: float = 10.0) -> ContactBook:
    """A contact book from Contacts databases, each opened read-only like chat.db."""
    with ExitStack() as stack:
        connections = [
            stack.enter_context(open_readonly(path, busy_timeout=busy_timeout, kind=ADDRESSBOOK)) for path in sources
        ]
        return ContactBook.from_connections(connections)


def normalize_handle(handle: str) -> str:
    """A comparison key: emails lower-cased and stripped; phone numbers reduced to digits.

    A leading country code is kept as given: '+1 (555) 867-5309' -> '15558675309',
    '555-867-5309' -> '5558675309'.
    Full-width and other Unicode digits count as digits; what follows a dial pause
    (`,` or `;`) is an extension and is dropped. Anything else (a business-chat
    `urn:…`, an alphanumeric SMS sender) is kept as a lower-cased opaque key that
    only matches itself.
    """
    text = unicodedata.normalize("NFKC", handle).strip()
    if "@" in text:
        return text.lower()
    dialled = text
    for pause in _DIAL_PAUSES:
        dialled = dialled.partition(pause)[0]
    digits = [str(unicodedata.decimal(ch)) for ch in dialled if ch.isdecimal()]
    if digits and all(
        ch.isdecimal() or ch in _PHONE_SYMBOLS or unicodedata.category(ch) in _PHONE_SEPARATOR_CATEGORIES
        for ch in dialled
    ):
        return "".join(digits)
    return text.lower()


class ContactBook:
    """Handle -> name lookup built from one or more AddressBook databases.

    It holds one name per normalised key; a key found on cards with different names
    holds the empty string, which marks it ambiguous (such keys never resolve, nor do
    handles that match them). That is also how `to_mapping` writes them, so a book
    rebuilt with `from_mapping` answers exactly like the original.
    """

    def __init__(self) -> None:
        """Create an empty book; use the `from_*` constructors to fill one."""
        self._names: dict[str, str] = {}
        # Phone keys by the digits they need to find in a longer number, and by the
        # digits they offer to a shorter one (see `_needles` and `_offers`).
        self._by_needle: dict[str, set[str]] = {}
        self._by_offer: dict[str, set[str]] = {}

    @classmethod
    def from_connections(cls, conns: Iterable[sqlite3.Connection]) -> ContactBook:
        """Read the cards of every open AddressBook database (SELECTs only) and merge them."""
        return cls.from_contacts(contact for conn in conns for contact in _read_contacts(conn))

    @classmethod
    def from_contacts(cls, contacts: Iterable[Contact]) -> ContactBook:
        """Index each contact's phones and emails under its display name; nameless cards are skipped."""
        book = cls()
        for contact in contacts:
            name = contact.display_name
            if name:
                for address in (*contact.phones, *contact.emails):
                    book._add(normalize_handle(address), name)
        book._build_index()
        return book

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str]) -> ContactBook:
        """Rebuild a book from `to_mapping` output (keys are normalised again; '' marks ambiguous)."""
        book = cls()
        for handle, name in mapping.items():
            book._add(normalize_handle(handle), _clean(name))
        book._build_index()
        return book

    def name_for(self, handle: str) -> str | None:
        """The contact name for a Messages handle, or None when unknown or ambiguous."""
        key = normalize_handle(handle)
        names = {self._names[k] for k in self._matching_keys(key)}
        if len(names) != 1:
            return None
        return names.pop() or None

    def to_mapping(self) -> dict[str, str]:
        """Normalized key -> name, sorted by key (for a JSON artifact).

        A key found on cards with different names maps to '' (ambiguous).
        """
        return dict(sorted(self._names.items()))

    def __len__(self) -> int:
        """Number of normalised keys, ambiguous ones included (as in `to_mapping`)."""
        return len(self._names)

    def _add(self, key: str, name: str) -> None:
        if not key:
            return
        known = self._names.setdefault(key, name)
        if known != name:
            self._names[key] = ""

    def _build_index(self) -> None:
        for key in self._names:
            if _is_phone_key(key):
                for needle in _needles(key):
                    self._by_needle.setdefault(needle, set()).add(key)
                for offer in _offers(key):
                    self._by_offer.setdefault(offer, set()).add(key)

    def _matching_keys(self, key: str) -> set[str]:
        found = {key} if key in self._names else set()
        if _is_phone_key(key):
            # Different lengths stand for "one side lacks the country code": two
            # numbers of one length with different digits are different numbers.
            for needle in _needles(key):
                found.update(k for k in self._by_offer.get(needle, ()) if len(k) != len(key))
            for offer in _offers(key):
                found.update(k for k in self._by_needle.get(offer, ()) if len(k) != len(key))
        return found


def _read_contacts(conn: sqlite3.Connection) -> list[Contact]:
    where = _describe(conn)
    advice = f"pass the {ADDRESSBOOK_FILENAME} files under ~/Library/Application Support/AddressBook"
    try:
        tables = {str(row[0]).upper() for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        record_columns = _columns(conn, RECORD_TABLE) if RECORD_TABLE in tables else set()
        if "Z_PK" not in record_columns:
            raise ContactsError(
                f"{where} is not a Contacts (AddressBook) database: it has no {RECORD_TABLE} table "
                f"with a Z_PK column; {advice}"
            )
        names_sql = ", ".join(
            column if column in record_columns else f"NULL AS {column}"
            for column in ("ZFIRSTNAME", "ZLASTNAME", "ZNICKNAME", "ZORGANIZATION")
        )
        records = {
            row[0]: tuple(_text(value) for value in row[1:])
            for row in conn.execute(f"SELECT Z_PK, {names_sql} FROM {RECORD_TABLE} ORDER BY Z_PK")
        }
        phones = _owned_values(conn, tables, PHONE_TABLE, ("ZFULLNUMBER",))
        emails = _owned_values(conn, tables, EMAIL_TABLE, ("ZADDRESS", "ZADDRESSNORMALIZED"))
    except sqlite3.Error as exc:
        raise ContactsError(f"cannot read {where} as a Contacts database: {exc}; {advice}") from exc
    return [
        Contact(
            first=first,
            last=last,
            nickname=nickname,
            organization=organization,
            phones=tuple(phones.get(pk, ())),
            emails=tuple(emails.get(pk, ())),
        )
        for pk, (first, last, nickname, organization) in records.items()
    ]


def _owned_values(
    conn: sqlite3.Connection, tables: set[str], table: str, value_columns: tuple[str, ...]
) -> dict[object, list[str]]:
    """`ZOWNER -> values` of a multi-value table, using the first value column present.

    Older Contacts versions may lack the table or the column: then there is nothing
    to read, which is not an error.
    """
    if table not in tables:
        return {}
    columns = _columns(conn, table)
    value_column = next((c for c in value_columns if c in columns), None)
    if "ZOWNER" not in columns or value_column is None:
        return {}
    owned: dict[object, list[str]] = {}
    sql = f"SELECT ZOWNER, {value_column} FROM {table} WHERE ZOWNER IS NOT NULL AND {value_column} IS NOT NULL"
    for owner, value in conn.execute(sql):
        owned.setdefault(owner, []).append(_text(value))
    return owned


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[0]).upper() for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}


def _describe(conn: sqlite3.Connection) -> str:
    """The database's file for error messages; SQLite cannot tell for a file that is not a database."""
    try:
        row = conn.execute("SELECT file FROM pragma_database_list WHERE name = 'main'").fetchone()
    except sqlite3.Error:
        row = None
    return str(row[0]) if row and row[0] else "the given database"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):  # a caller's text_factory may hand us bytes
        return value.decode("utf-8", errors="replace")
    return str(value)


def _clean(text: str) -> str:
    """A name part with surrounding and repeated whitespace removed, in NFC."""
    return unicodedata.normalize("NFC", " ".join(text.split()))


# --- phone matching ------------------------------------------------------------------


def _is_phone_key(key: str) -> bool:
    return key.isascii() and key.isdigit()


def _needles(digits: str) -> list[str]:
    """The endings a number must share with a number of another length to be the same phone.

    Its last 10 digits, or all of it when it has 7 to 9; and, for a local number
    written with a trunk `0`, the national number behind it.
    """
    needles = []
    if len(digits) >= _NATIONAL_DIGITS:
        needles.append(digits[-_NATIONAL_DIGITS:])
    elif len(digits) >= _MIN_PHONE_DIGITS:
        needles.append(digits)
    national = digits[1:]
    # A local number's trunk prefix takes the place of the country code.
    is_trunk = digits.startswith("0") and not national.startswith("0")
    if is_trunk and _MIN_PHONE_DIGITS <= len(national) < _NATIONAL_DIGITS:
        needles.append(national)
    return needles


def _offers(digits: str) -> list[str]:
    """The endings of a number that another number's needles may equal: its last 10, 9, 8 and 7 digits."""
    offers = [digits[-_NATIONAL_DIGITS:]] if len(digits) >= _NATIONAL_DIGITS else []
    offers += [digits[-n:] for n in range(_MIN_PHONE_DIGITS, _NATIONAL_DIGITS) if len(digits) > n]
    return offers
