"""Redaction (shaping.redaction): phone numbers by libphonenumber in a region, e-mails, codes,
URLs, and the people the snapshot knows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from imessage_finetune.langchain.chat_utils import redact as langchain_redact
from imessage_finetune.shaping import KnownPeople, Redactor, phone_region, redact

ALL: dict[str, Any] = {"phones": True, "emails": True, "codes": True, "urls": True}


def test_the_langchain_module_offers_the_same_function() -> None:
    """chat_utils.redact is the shaping rule itself, not a copy."""
    assert langchain_redact is redact


@pytest.mark.parametrize(
    ("text", "expected", "kinds"),
    [
        ("Your verification code is 123456.", "Your verification code is [code].", ["code"]),
        ("123456 is your Instagram code", "[code] is your Instagram code", ["code"]),
        (
            "G-482913 is your Google verification code.",
            "G-[code] is your Google verification code.",
            ["code"],
        ),
        (
            "Your Apple ID Code is: 6543. Don't share it.",
            "Your Apple ID Code is: [code]. Don't share it.",
            ["code"],
        ),
        ("<#> Your WhatsApp code: 123-456", "<#> Your WhatsApp code: [code]", ["code"]),
        ("OTP - 98765432", "OTP - [code]", ["code"]),
        ("the passcode for the door is 4821", "the passcode for the door is [code]", ["code"]),
        ("call (555) 123-4567 now", "call [phone] now", ["phone"]),
        ("555-123-4567, 555.123.4567, 5551234567", "[phone], [phone], [phone]", ["phone"] * 3),
        ("toll free 1-800-555-0199.", "toll free [phone].", ["phone"]),
        ("UK +44 20 7946 0958, US +1 (555) 123-4567", "UK [phone], US [phone]", ["phone"] * 2),
        ("mail john.doe+x@example.co.uk!", "mail [email]!", ["email"]),
        ("see https://example.com/a?b=1, ok", "see [url], ok", ["url"]),
        ("(www.example.org)", "([url])", ["url"]),
        ("HTTPS://Example.org and WWW.Example.org", "[url] and [url]", ["url"] * 2),
        ("code: 555-123-4567", "code: [phone]", ["phone"]),
        # libphonenumber also knows the local seven-digit form the old pattern missed.
        ("my number is 867-5309", "my number is [phone]", ["phone"]),
    ],
)
def test_redact_finds_each_kind(text: str, expected: str, kinds: list[str]) -> None:
    """Phones, e-mails, one-time codes and URLs are replaced and counted by kind."""
    assert redact(text, **ALL) == (expected, Counter(kinds))


@pytest.mark.parametrize(
    "text",
    [
        "born in 1987, moved 1999-2003, back in 2019",
        "In 2019 the code changed",
        "2019 is the year of code",
        "meet at 10:30 or 21:45:00 on 2024-05-01 or 05/01/2024",
        "it was $1,299.99, or €12.50, or 1,234,567 points",
        "room 4021, order #12345678, flight 1234",
        "code review at 10:30",
        "zipcode 94103 and barcode 12345678",
        "a 12345678901234567890 digit id",
    ],
)
def test_redact_leaves_years_times_prices_and_numbers(text: str) -> None:
    """Years, dates, times, prices and bare numbers are not taken for phones or codes."""
    assert redact(text, **ALL) == (text, Counter())


def test_redact_only_enabled_kinds_and_shields_the_rest() -> None:
    """Disabled kinds are kept verbatim, and their text is not matched as another kind."""
    text = "https://x.com/5551234567 a@b.io 5551234567 code 1234"
    assert redact(text, phones=True, emails=False, codes=False, urls=False) == (
        "https://x.com/5551234567 a@b.io [phone] code 1234",
        Counter({"phone": 1}),
    )
    assert redact(text, phones=False, emails=True, codes=True, urls=True) == (
        "[url] [email] 5551234567 code [code]",
        Counter({"url": 1, "email": 1, "code": 1}),
    )


def test_redact_nothing_enabled_returns_the_text() -> None:
    """With every kind off the text comes back unchanged with an empty counter."""
    text = "call 555-123-4567"
    assert redact(text, phones=False, emails=False, codes=False, urls=False) == (text, Counter())


def test_numbers_without_country_code_are_read_in_the_region() -> None:
    """A British number written the British way is a number in GB, not in the US; with its
    country code it is one anywhere."""
    text = "ring 020 7946 0958 or 07700 900123"
    assert redact(text, **ALL, region="US") == (text, Counter())
    assert redact(text, **ALL, region="GB") == ("ring [phone] or [phone]", Counter(phone=2))
    assert redact("ring +44 20 7946 0958", **ALL, region="FR")[0] == "ring [phone]"


def test_a_chats_region_is_its_participants_country() -> None:
    """The most common country code among phone handles decides; e-mails do not count; no
    number at all falls back to the default; ties go to the first region alphabetically."""
    assert phone_region(["+447700900123", "+447700900124", "+15555550101", "a@b.fr"]) == "GB"
    assert phone_region(["a@b.fr", "not a number"]) == "US"
    assert phone_region([], default="DE") == "DE"
    assert phone_region(["+33612345678", "+447700900123"]) == "FR"


def people() -> KnownPeople:
    return KnownPeople.from_identities(
        ["+15555550101", "Bob@Example.com", "447700900123", "urn:biz:1"],
        ["Aunt Hillary", "Zoë Brandt", "张伟", ""],
    )


def test_known_handles_are_hidden_in_any_format_even_with_their_kind_off() -> None:
    """A known phone number written another way, and a known e-mail in another case, are
    replaced; an unknown number or e-mail is left alone when phones and e-mails are off."""
    hide = Redactor(known=people())
    text = "call (555) 555-0101 or 07700 900123, mail BOB@example.com, not 555-123-4567 or x@y.org"
    assert hide(text, "GB") == (
        "call [phone] or [phone], mail [email], not 555-123-4567 or x@y.org",
        Counter(phone=2, email=1),
    )


def test_known_names_are_hidden_whole_or_by_word() -> None:
    """Full names, and each word of them, as whole words with their case and accents; scripts
    without spaces match inside a sentence."""
    hide = Redactor(known=people())
    assert hide("Aunt Hillary said hi to Hillary and Zoë; Zoe and hillary stay") == (
        "[name] said hi to [name] and [name]; Zoe and hillary stay",
        Counter(name=3),
    )
    assert hide("我和张伟去") == ("我和[name]去", Counter(name=1))
    assert hide("Hillaryous Brandtish") == ("Hillaryous Brandtish", Counter())


def test_known_people_come_from_contacts_and_participants(tmp_path: Path) -> None:
    """contacts.json's handles and names, and sessions.json's participants, are known."""
    contacts = tmp_path / "contacts.json"
    contacts.write_text(json.dumps({"sources": 1, "contacts": {"15555550101": "Aunt Hillary", "x@y.org": ""}}))
    sessions = tmp_path / "sessions.json"
    session = {"participants": [{"handle": "+447700900123", "name": None}, {"handle": "c@d.org", "name": "Crab"}]}
    sessions.write_text(json.dumps({"format": "x", "sessions": [session], "stats": {}}))
    hide = Redactor(known=KnownPeople.from_artifacts(contacts, sessions))
    assert hide("Crab and Hillary: +1 555 555 0101, +44 7700 900123, x@y.org, c@d.org")[0] == (
        "[name] and [name]: [phone], [phone], [email], [email]"
    )
