"""Contact names for Messages handles, read from AddressBook databases built in code."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from imessage_finetune.fixtures.addressbook import write_addressbook
from imessage_finetune.fixtures.apple_schema import create_schema
from imessage_finetune.sources.contacts import (
    Contact,
    ContactBook,
    default_addressbook_paths,
    normalize_handle,
)
from imessage_finetune.errors import ContactsError

JENNY = Contact(first="Jenny", last="Tutone", phones=("+1 (555) 867-5309",), emails=("Jenny@Example.COM",))


def open_ro(path: Path) -> sqlite3.Connection:
    """Open a database the way callers do: read-only URI."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def book_from_file(tmp_path: Path, *contacts: Contact) -> ContactBook:
    """Write `contacts` to an AddressBook file and read them back through SQLite."""
    path = tmp_path / "AddressBook-v22.abcddb"
    write_addressbook(path, contacts)
    conn = open_ro(path)
    try:
        return ContactBook.from_connections([conn])
    finally:
        conn.close()


# --- normalize_handle ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("handle", "key"),
    [
        ("+1 (555) 867-5309", "15558675309"),
        ("555-867-5309", "5558675309"),
        ("+15558675309", "15558675309"),
        ("555.867.5309", "5558675309"),
        ("\u202a+1\u00a0555\u2011867\u20115309\u202c", "15558675309"),  # copied with direction marks, NBSP
        ("＋１ ５５５ ８６７ ５３０９", "15558675309"),  # full-width
        ("+1 555 867 5309,123", "15558675309"),  # dial pause then extension
        ("  Jenny@Example.COM ", "jenny@example.com"),
        ("urn:biz:ABC-def", "urn:biz:abc-def"),
        ("1-800-FLOWERS", "1-800-flowers"),
    ],
)
def test_normalize_handle_reduces_numbers_to_digits_and_lowercases_the_rest(handle: str, key: str) -> None:
    """Phone numbers keep only their digits (country code as given); emails and opaque ids are lower-cased."""
    assert normalize_handle(handle) == key


# --- matching ------------------------------------------------------------------------

PHONE_FORMATS = ["+1 (555) 867-5309", "5558675309", "+15558675309", "(555) 867-5309", "1-555-867-5309"]


@pytest.mark.parametrize("stored", PHONE_FORMATS)
@pytest.mark.parametrize("handle", PHONE_FORMATS)
def test_phone_number_matches_in_any_format(tmp_path: Path, stored: str, handle: str) -> None:
    """A number stored with or without country code and punctuation resolves from any other spelling."""
    book = book_from_file(tmp_path, Contact(first="Jenny", phones=(stored,)))
    assert book.name_for(handle) == "Jenny"


def test_email_matches_case_insensitively(tmp_path: Path) -> None:
    """Email handles resolve whatever the case on either side."""
    book = book_from_file(tmp_path, JENNY)
    assert book.name_for("jenny@example.com") == "Jenny Tutone"
    assert book.name_for(" JENNY@EXAMPLE.com") == "Jenny Tutone"
    assert book.name_for("jenny@example.org") is None


def test_different_country_codes_are_different_numbers() -> None:
    """Two numbers that both carry a country code only match when all their digits do."""
    book = ContactBook.from_contacts([Contact(first="Jenny", phones=("+1 555 867 5309",))])
    assert book.name_for("+7 555 867 5309") is None
    assert book.name_for("+1 555 867 5300") is None


def test_short_numbers_match_only_exactly() -> None:
    """Short codes (under 7 digits) never match the tail of a longer number."""
    book = ContactBook.from_contacts([Contact(organization="Bank", phones=("72345",))])
    assert book.name_for("72345") == "Bank"
    assert book.name_for("+1 555 867 2345") is None


def test_seven_to_nine_digit_number_matches_as_the_end_of_a_longer_one() -> None:
    """A number saved without area code (7 to 9 digits) matches the full number ending with it."""
    book = ContactBook.from_contacts([Contact(first="Jenny", phones=("867-5309",))])
    assert book.name_for("+15558675309") == "Jenny"
    assert book.name_for("+15558675308") is None


@pytest.mark.parametrize(
    ("stored", "handle"),
    [
        ("06 12 34 56 78", "+33612345678"),  # France: trunk 0, 9-digit national number
        ("030 1234567", "+49301234567"),  # Germany
        ("020 7946 0958", "+442079460958"),  # UK: 10-digit national number
        ("090-1234-5678", "+819012345678"),  # Japan
    ],
)
def test_local_number_with_trunk_prefix_matches_international_form(stored: str, handle: str) -> None:
    """Numbers saved in local format (trunk 0, no country code) resolve from their E.164 handle and back."""
    book = ContactBook.from_contacts([Contact(first="Amélie", phones=(stored,))])
    assert book.name_for(handle) == "Amélie"
    reverse = ContactBook.from_contacts([Contact(first="Amélie", phones=(handle,))])
    assert reverse.name_for(stored) == "Amélie"


def test_unknown_and_empty_handles_resolve_to_none(tmp_path: Path) -> None:
    """Handles on no card, and empty handles, give None."""
    book = book_from_file(tmp_path, JENNY)
    assert book.name_for("+15550000000") is None
    assert book.name_for("") is None


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contact", "name"),
    [
        (Contact(first=" Jenny ", last=" Tutone ", nickname="J", organization="Acme"), "Jenny Tutone"),
        (Contact(first="Jenny", nickname="J"), "Jenny"),
        (Contact(last="Tutone", nickname="J"), "Tutone"),
        (Contact(first="  ", nickname=" JT ", organization="Acme"), "JT"),
        (Contact(organization=" Acme  Plumbing "), "Acme Plumbing"),
        (Contact(first=" ", last="\t", nickname="", organization=" "), ""),
    ],
)
def test_display_name_falls_back_from_name_to_nickname_to_organization(contact: Contact, name: str) -> None:
    """display_name is 'First Last', else the nickname, else the organization, whitespace stripped."""
    assert contact.display_name == name


def test_fallback_names_are_read_from_the_database(tmp_path: Path) -> None:
    """Nickname-only and company cards resolve to their nickname and organization."""
    book = book_from_file(
        tmp_path,
        Contact(nickname="Mom", phones=("+15550000001",)),
        Contact(organization="Acme Plumbing", emails=("info@acme.example",)),
    )
    assert book.name_for("+15550000001") == "Mom"
    assert book.name_for("INFO@acme.example") == "Acme Plumbing"


def test_cards_without_any_name_are_skipped(tmp_path: Path) -> None:
    """A nameless card contributes no key (it would resolve to an empty name)."""
    book = book_from_file(tmp_path, Contact(first="  ", phones=("+15550000002",), emails=("x@example.com",)))
    assert len(book) == 0
    assert book.name_for("+15550000002") is None


# --- several sources and ambiguity ---------------------------------------------------


def test_two_sources_are_merged(tmp_path: Path) -> None:
    """Cards from the top-level store and an account store resolve from one book."""
    local = tmp_path / "AddressBook-v22.abcddb"
    icloud = tmp_path / "Sources" / "4F1C" / "AddressBook-v22.abcddb"
    icloud.parent.mkdir(parents=True)
    write_addressbook(local, [JENNY])
    write_addressbook(icloud, [Contact(first="Tommy", phones=("+44 20 7946 0958",)), JENNY])
    conns = [open_ro(local), open_ro(icloud)]
    try:
        book = ContactBook.from_connections(conns)
    finally:
        for conn in conns:
            conn.close()
    assert book.name_for("+15558675309") == "Jenny Tutone"  # on both cards, same name: not ambiguous
    assert book.name_for("+442079460958") == "Tommy"


def test_same_number_with_two_names_is_ambiguous() -> None:
    """A number on two cards with different names resolves to None rather than to either."""
    book = ContactBook.from_contacts(
        [Contact(first="Alice", phones=("+1 555 000 1111",)), Contact(first="Bob", phones=("+15550001111",))]
    )
    assert book.name_for("+15550001111") is None
    assert book.name_for("5550001111") is None


def test_number_matching_two_cards_through_the_country_code_rule_is_ambiguous() -> None:
    """A handle matching one card exactly and another without country code still resolves to None."""
    book = ContactBook.from_contacts(
        [Contact(first="Alice", phones=("+1 555 000 1111",)), Contact(first="Bob", phones=("555-000-1111",))]
    )
    assert book.name_for("+15550001111") is None


def test_number_without_country_code_matching_two_countries_is_ambiguous() -> None:
    """A national number that fits two international numbers of different countries resolves to None."""
    book = ContactBook.from_contacts(
        [
            Contact(first="Alice", phones=("+1 555 000 1111",)),
            Contact(first="Ivan", phones=("+7 555 000 1111",)),
        ]
    )
    assert book.name_for("+15550001111") == "Alice"
    assert book.name_for("+75550001111") == "Ivan"
    assert book.name_for("5550001111") is None


def test_shared_email_with_two_names_is_ambiguous() -> None:
    """An email address on two differently named cards (a family account) resolves to None."""
    book = ContactBook.from_contacts(
        [
            Contact(first="Alice", emails=("Family@example.com",)),
            Contact(first="Bob", emails=("family@example.com",)),
        ]
    )
    assert book.name_for("family@example.com") is None


# --- reading databases ---------------------------------------------------------------


def test_from_connections_runs_only_selects(tmp_path: Path) -> None:
    """Reading a Contacts database never writes, pragmas included: every statement is a SELECT."""
    path = tmp_path / "AddressBook-v22.abcddb"
    write_addressbook(path, [JENNY])
    statements: list[str] = []
    conn = open_ro(path)
    conn.set_trace_callback(statements.append)
    try:
        ContactBook.from_connections([conn])
    finally:
        conn.close()
    # SQLite traces the pragma behind a table-valued function as a "-- PRAGMA" comment.
    executed = [s for s in statements if not s.startswith("-- ")]
    assert executed
    assert all(s.lstrip().upper().startswith("SELECT") for s in executed), executed


def test_older_schema_without_optional_tables_and_columns_is_read(tmp_path: Path) -> None:
    """A store lacking the email table and the nickname/organization columns still yields names."""
    path = tmp_path / "AddressBook-v22.abcddb"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE ZABCDRECORD (Z_PK INTEGER PRIMARY KEY, Z_ENT INTEGER, Z_OPT INTEGER,
                                  ZFIRSTNAME VARCHAR, ZLASTNAME VARCHAR);
        CREATE TABLE ZABCDPHONENUMBER (Z_PK INTEGER PRIMARY KEY, Z_ENT INTEGER, Z_OPT INTEGER,
                                       ZOWNER INTEGER, ZFULLNUMBER VARCHAR);
        INSERT INTO ZABCDRECORD VALUES (1, 22, 1, 'Jenny', NULL);
        INSERT INTO ZABCDPHONENUMBER VALUES (1, 15, 1, 1, '555-867-5309');
        """
    )
    conn.close()
    ro = open_ro(path)
    try:
        book = ContactBook.from_connections([ro])
    finally:
        ro.close()
    assert book.to_mapping() == {"5558675309": "Jenny"}


def test_email_falls_back_to_the_normalized_column(tmp_path: Path) -> None:
    """When ZADDRESS is absent, ZADDRESSNORMALIZED supplies the email address."""
    path = tmp_path / "AddressBook-v22.abcddb"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE ZABCDRECORD (Z_PK INTEGER PRIMARY KEY, ZFIRSTNAME VARCHAR);
        CREATE TABLE ZABCDEMAILADDRESS (Z_PK INTEGER PRIMARY KEY, ZOWNER INTEGER, ZADDRESSNORMALIZED VARCHAR);
        INSERT INTO ZABCDRECORD VALUES (1, 'Jenny');
        INSERT INTO ZABCDEMAILADDRESS VALUES (1, 1, 'jenny@example.com');
        """
    )
    conn.close()
    ro = open_ro(path)
    try:
        assert ContactBook.from_connections([ro]).name_for("Jenny@Example.com") == "Jenny"
    finally:
        ro.close()


def test_messages_database_is_not_an_addressbook(tmp_path: Path) -> None:
    """Passing a chat.db (SQLite, wrong tables) raises ContactsError naming the file and the missing table."""
    path = tmp_path / "chat.db"
    conn = sqlite3.connect(path)
    create_schema(conn)
    conn.close()
    ro = open_ro(path)
    try:
        expected = r"chat\.db is not a Contacts \(AddressBook\) database.*ZABCDRECORD"
        with pytest.raises(ContactsError, match=expected):
            ContactBook.from_connections([ro])
    finally:
        ro.close()


def test_non_sqlite_file_is_not_an_addressbook(tmp_path: Path) -> None:
    """A file that is not SQLite at all raises ContactsError naming the file, not sqlite3.DatabaseError."""
    path = tmp_path / "AddressBook-v22.abcddb"
    path.write_bytes(b"BEGIN:VCARD\nFN:Jenny\nEND:VCARD\n" * 200)
    ro = open_ro(path)
    try:
        with pytest.raises(ContactsError, match=r"not a database.*AddressBook-v22\.abcddb"):
            ContactBook.from_connections([ro])
    finally:
        ro.close()


# --- default paths -------------------------------------------------------------------


def test_default_addressbook_paths_lists_top_level_and_sources(tmp_path: Path) -> None:
    """Every existing store is listed, sorted: the top-level one and one per Sources/<uuid> folder."""
    root = tmp_path / "Library" / "Application Support" / "AddressBook"
    expected = [
        root / "AddressBook-v22.abcddb",
        root / "Sources" / "1B2C-UUID" / "AddressBook-v22.abcddb",
        root / "Sources" / "9F00-UUID" / "AddressBook-v22.abcddb",
    ]
    for path in reversed(expected):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (root / "Sources" / "EMPTY-UUID").mkdir()  # an account folder without a store
    (root / "Sources" / "AddressBook-v22.abcddb").write_bytes(b"")  # not in a source folder
    (root / "Sources" / "5A5A-UUID" / "AddressBook-v22.abcddb").mkdir(parents=True)  # a folder, not a file
    assert default_addressbook_paths(tmp_path) == expected


def test_default_addressbook_paths_is_empty_without_contacts(tmp_path: Path) -> None:
    """A home without the AddressBook folder gives no paths rather than an error."""
    assert default_addressbook_paths(tmp_path) == []


def test_default_addressbook_paths_reports_denied_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder macOS refuses to list raises ContactsError with Full Disk Access advice."""
    (tmp_path / "Library" / "Application Support" / "AddressBook" / "Sources").mkdir(parents=True)

    def denied(self: Path) -> None:
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(ContactsError, match="Full Disk Access"):
        default_addressbook_paths(tmp_path)


# --- mapping artifact ----------------------------------------------------------------


def test_mapping_round_trip_answers_like_the_original(tmp_path: Path) -> None:
    """to_mapping is sorted JSON-ready data, and from_mapping rebuilds a book that answers identically."""
    book = book_from_file(
        tmp_path,
        JENNY,
        Contact(first="Alice", phones=("+1 555 000 1111",)),
        Contact(first="Bob", phones=("+15550001111",)),
        Contact(first="Carol", phones=("555-000-1111", "06 12 34 56 78")),
        Contact(organization="Acme", emails=("Info@Acme.example",)),
    )
    mapping = book.to_mapping()
    assert list(mapping) == sorted(mapping)
    assert mapping["15550001111"] == ""  # the ambiguity is kept, not dropped
    rebuilt = ContactBook.from_mapping(json.loads(json.dumps(mapping)))
    assert rebuilt.to_mapping() == mapping
    assert len(rebuilt) == len(book) == 6
    for handle in ["+15558675309", "5558675309", "jenny@example.com", "+15550001111", "5550001111",
                   "+33612345678", "info@acme.example", "+15550009999"]:
        assert rebuilt.name_for(handle) == book.name_for(handle), handle
    assert rebuilt.name_for("5550001111") is None  # Carol's number is also Alice's and Bob's


def test_from_mapping_normalizes_keys_and_names() -> None:
    """Hand-written mappings may use raw handles and padded names; they are normalised on the way in."""
    book = ContactBook.from_mapping(
        {"+1 (555) 867-5309": "  Jenny  Tutone ", "JENNY@example.com": "Jenny Tutone"}
    )
    assert book.to_mapping() == {"15558675309": "Jenny Tutone", "jenny@example.com": "Jenny Tutone"}
    assert book.name_for("555-867-5309") == "Jenny Tutone"
