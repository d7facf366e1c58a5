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

The caller opens the databases (read-only, see `../shared/notes/chatdb.md` §8) and
passes the connections; this module only runs SELECTs on them.
"""

from __future__ import annotations

import os
import plistlib
import sqlite3
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from imessage_finetune.errors import ContactsError

_ADDRESSBOOK_FILENAME = "AddressBook-v22.abcddb"

_RECORD = "ZABCDRECORD"
_PHONE = "ZABCDPHONENUMBER"
_EMAIL = "ZABCDEMAILADDRESS"

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
        candidates = [root / _ADDRESSBOOK_FILENAME]
        sources = root / "Sources"
        if sources.is_dir():
            candidates += [source / _ADDRESSBOOK_FILENAME for source in sources.iterdir()]
        return sorted(path for path in candidates if path.is_file())
    except PermissionError as exc:
        # macOS guards this folder; without access Python sees EPERM, not "missing".
        raise ContactsError(
            f"cannot look for Contacts databases in {root}: permission denied; grant Full Disk "
            "Access (or Contacts access) to your terminal and the app that launched it"
        ) from exc


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


def write_addressbook(path: Path, contacts: Iterable[Contact]) -> None:
    """Create an AddressBook-v22.abcddb in the real Core Data layout (for tests and the demo).

    The bytes are deterministic: fixed page size, journal_mode DELETE, no timestamps
    from the clock. An existing file at `path` is replaced atomically.
    """
    path = Path(path)
    contacts = list(contacts)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    conn = sqlite3.connect(partial, isolation_level=None)
    try:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("BEGIN")
        for statement in _ADDRESSBOOK_DDL:
            conn.execute(statement)
        _insert_contacts(conn, contacts)
        conn.execute("COMMIT")
    finally:
        conn.close()
    # A stale WAL or journal beside the target would be replayed onto the new file.
    for suffix in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    os.replace(partial, path)


# --- reading -------------------------------------------------------------------------


def _read_contacts(conn: sqlite3.Connection) -> list[Contact]:
    where = _describe(conn)
    advice = f"pass the {_ADDRESSBOOK_FILENAME} files under ~/Library/Application Support/AddressBook"
    try:
        tables = {
            str(row[0]).upper()
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        record_columns = _columns(conn, _RECORD) if _RECORD in tables else set()
        if "Z_PK" not in record_columns:
            raise ContactsError(
                f"{where} is not a Contacts (AddressBook) database: it has no {_RECORD} table "
                f"with a Z_PK column; {advice}"
            )
        names_sql = ", ".join(
            column if column in record_columns else f"NULL AS {column}"
            for column in ("ZFIRSTNAME", "ZLASTNAME", "ZNICKNAME", "ZORGANIZATION")
        )
        records = {
            row[0]: tuple(_text(value) for value in row[1:])
            for row in conn.execute(f"SELECT Z_PK, {names_sql} FROM {_RECORD} ORDER BY Z_PK")
        }
        phones = _owned_values(conn, tables, _PHONE, ("ZFULLNUMBER",))
        emails = _owned_values(conn, tables, _EMAIL, ("ZADDRESS", "ZADDRESSNORMALIZED"))
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
    sql = (
        f"SELECT ZOWNER, {value_column} FROM {table} "
        f"WHERE ZOWNER IS NOT NULL AND {value_column} IS NOT NULL"
    )
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


# --- writing -------------------------------------------------------------------------

# Entity numbers of Contacts' Core Data model (ABAddressBook on macOS 26): name, id, parent.
_ENTITIES: tuple[tuple[str, int, int], ...] = (
    ("ABCDEmailAddress", 11, 0),
    ("ABCDPhoneNumber", 15, 0),
    ("ABCDRecord", 17, 0),
    ("ABCDAbstractGroup", 18, 17),
    ("ABCDGroup", 19, 18),
    ("ABCDContact", 22, 17),
    ("CNCDContainer", 25, 17),
)
_ENT = {name: number for name, number, _ in _ENTITIES}
_ENTITY_OF = {_PHONE: "ABCDPhoneNumber", _EMAIL: "ABCDEmailAddress"}

# A subset of the real store's DDL, in Core Data's column order and spelling.
_ADDRESSBOOK_DDL: tuple[str, ...] = (
    "CREATE TABLE Z_PRIMARYKEY (Z_ENT INTEGER PRIMARY KEY, Z_NAME VARCHAR, Z_SUPER INTEGER, Z_MAX INTEGER)",
    "CREATE TABLE Z_METADATA (Z_VERSION INTEGER PRIMARY KEY, Z_UUID VARCHAR(255), Z_PLIST BLOB)",
    "CREATE TABLE ZABCDRECORD ( Z_PK INTEGER PRIMARY KEY, Z_ENT INTEGER, Z_OPT INTEGER, ZDISPLAYFLAGS INTEGER,"
    " ZCONTAINER1 INTEGER, ZCREATIONDATE TIMESTAMP, ZMODIFICATIONDATE TIMESTAMP, ZUNIQUEID VARCHAR, ZNAME VARCHAR,"
    " ZDEPARTMENT VARCHAR, ZFIRSTNAME VARCHAR, ZJOBTITLE VARCHAR, ZLASTNAME VARCHAR, ZMAIDENNAME VARCHAR,"
    " ZMIDDLENAME VARCHAR, ZNICKNAME VARCHAR, ZORGANIZATION VARCHAR, ZSUFFIX VARCHAR, ZTITLE VARCHAR,"
    " ZIMAGEDATA BLOB, ZTHUMBNAILIMAGEDATA BLOB )",
    "CREATE TABLE ZABCDPHONENUMBER ( Z_PK INTEGER PRIMARY KEY, Z_ENT INTEGER, Z_OPT INTEGER, ZISPRIMARY INTEGER,"
    " ZISPRIVATE INTEGER, ZORDERINGINDEX INTEGER, ZOWNER INTEGER, Z22_OWNER INTEGER, ZAREACODE VARCHAR,"
    " ZCOUNTRYCODE VARCHAR, ZEXTENSION VARCHAR, ZFULLNUMBER VARCHAR, ZLABEL VARCHAR, ZLASTFOURDIGITS VARCHAR,"
    " ZLOCALNUMBER VARCHAR, ZUNIQUEID VARCHAR )",
    "CREATE TABLE ZABCDEMAILADDRESS ( Z_PK INTEGER PRIMARY KEY, Z_ENT INTEGER, Z_OPT INTEGER, ZISPRIMARY INTEGER,"
    " ZISPRIVATE INTEGER, ZORDERINGINDEX INTEGER, ZOWNER INTEGER, Z22_OWNER INTEGER, ZADDRESS VARCHAR,"
    " ZADDRESSNORMALIZED VARCHAR, ZLABEL VARCHAR, ZUNIQUEID VARCHAR )",
    "CREATE INDEX ZABCDRECORD_ZCONTAINER1_INDEX ON ZABCDRECORD (ZCONTAINER1)",
    "CREATE INDEX ZABCDPHONENUMBER_ZOWNER_INDEX ON ZABCDPHONENUMBER (ZOWNER)",
    "CREATE INDEX ZABCDEMAILADDRESS_ZOWNER_INDEX ON ZABCDEMAILADDRESS (ZOWNER)",
)

# Stored dates are Core Data seconds since 2001-01-01Z; a fixed one keeps bytes stable.
_FIXED_DATE = 757382400.0  # 2025-01-01T00:00:00Z
_UUID_NAMESPACE = uuid.UUID("0b6c5f4e-8d1a-5e53-9d57-6a0c2f1e4b7a")
_MOBILE_LABEL = "_$!<Mobile>!$_"
_HOME_LABEL = "_$!<Home>!$_"


def _insert_contacts(conn: sqlite3.Connection, contacts: list[Contact]) -> None:
    """Fill the tables the way Contacts does: the store's container card, then one card per contact."""
    store_uuid = _stable_uuid(repr(contacts))
    plist = plistlib.dumps({"NSStoreType": "SQLite", "NSStoreUUID": store_uuid}, fmt=plistlib.FMT_BINARY)
    _insert(conn, "Z_METADATA", Z_VERSION=1, Z_UUID=store_uuid, Z_PLIST=plist)
    card = {"Z_OPT": 1, "ZDISPLAYFLAGS": 0, "ZCREATIONDATE": _FIXED_DATE, "ZMODIFICATIONDATE": _FIXED_DATE}
    container = f"{_stable_uuid('container')}:ABContainer"
    _insert(conn, _RECORD, Z_PK=1, Z_ENT=_ENT["CNCDContainer"], ZUNIQUEID=container, **card)
    last_pk = {_PHONE: 0, _EMAIL: 0}
    for pk, contact in enumerate(contacts, start=2):
        person = _stable_uuid(f"{pk}:{contact!r}")
        _insert(
            conn, _RECORD, Z_PK=pk, Z_ENT=_ENT["ABCDContact"], ZCONTAINER1=1, ZUNIQUEID=f"{person}:ABPerson",
            ZFIRSTNAME=contact.first or None, ZLASTNAME=contact.last or None,
            ZNICKNAME=contact.nickname or None, ZORGANIZATION=contact.organization or None, **card,
        )
        values = [(_PHONE, i, _phone_fields(number)) for i, number in enumerate(contact.phones)]
        values += [(_EMAIL, i, _email_fields(address)) for i, address in enumerate(contact.emails)]
        for table, index, fields in values:
            last_pk[table] += 1
            _insert(
                conn, table, Z_PK=last_pk[table], Z_ENT=_ENT[_ENTITY_OF[table]], Z_OPT=1,
                ZISPRIMARY=int(index == 0), ZISPRIVATE=0, ZORDERINGINDEX=index, ZOWNER=pk,
                Z22_OWNER=_ENT["ABCDContact"],
                ZUNIQUEID=f"{_stable_uuid(f'{person}:{table}:{index}')}:ABMultiValue", **fields,
            )
    # Sub-entities share their root entity's primary keys, so only roots count up.
    maxima = {
        "ABCDRecord": len(contacts) + 1,
        "ABCDPhoneNumber": last_pk[_PHONE],
        "ABCDEmailAddress": last_pk[_EMAIL],
    }
    for name, number, parent in _ENTITIES:
        _insert(conn, "Z_PRIMARYKEY", Z_ENT=number, Z_NAME=name, Z_SUPER=parent, Z_MAX=maxima.get(name, 0))


def _phone_fields(number: str) -> dict[str, object]:
    digits = "".join(ch for ch in number if ch.isdigit())
    return {"ZFULLNUMBER": number, "ZLABEL": _MOBILE_LABEL, "ZLASTFOURDIGITS": digits[-4:] or None}


def _email_fields(address: str) -> dict[str, object]:
    return {"ZADDRESS": address, "ZADDRESSNORMALIZED": address.strip().lower(), "ZLABEL": _HOME_LABEL}


def _insert(conn: sqlite3.Connection, table: str, **row: object) -> None:
    placeholders = ", ".join("?" * len(row))
    conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({placeholders})", tuple(row.values()))


def _stable_uuid(seed: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, seed)).upper()
