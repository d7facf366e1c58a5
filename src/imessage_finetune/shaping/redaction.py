"""Redaction: phone numbers, e-mail addresses, one-time codes, URLs and known people.

One scan per text finds every kind, earliest first, so a kind that is not redacted still
shields its text from the others (the digits of a URL are not taken for a phone number when
URLs are kept). Phone numbers are found by Google's libphonenumber rules (the `phonenumbers`
package), read in a region (`phone_region`): numbers written with their country code
(`+44 20 7946 0958`) are found in any region, numbers written without it are read as the
region writes them (`(555) 123-4567` in the US, `020 7946 0958` in GB). Known people
(`KnownPeople`) are the exact handles and contact names the snapshot already knows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

from imessage_finetune.jsonio import load_json, read_stream
from imessage_finetune.sources.contacts import ContactBook, normalize_handle

PLACEHOLDERS: dict[str, str] = {
    "phone": "[phone]",
    "email": "[email]",
    "code": "[code]",
    "url": "[url]",
    "name": "[name]",
}
"""What redaction puts in place of each kind of match; the keys are those of its counter."""

DEFAULT_REGION = "US"
"""The region of phone numbers written without a country code when nothing says otherwise."""

_CODE_WORD = r"(?:pass)?code|otp|pin|verification|verify|2fa"
_CODE_DIGITS = r"(?:\d{3}[- ]\d{3}|\d{4,8})(?!\d|[-.,:/]\d)"
_PATTERN = re.compile(
    rf"""
    (?P<url>(?i:\b(?:https?://|www\.))[^\s<>"']*[^\s<>"'.,;:!?)\]])
    | (?P<email>\b[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{{2,}}\b)
    # A code after its keyword: "code 1234", "code: 1234", "Your Uber code is 1234",
    # "verification code for your account: 123-456". The keyword is kept.
    | (?P<code_lead>(?i:\b(?:{_CODE_WORD})\b
        (?:(?:\s+[a-z][\w'-]*){{0,4}}?\s*(?:\bis\b|[:=])\s*:?\s*|[\s:#=-]+)))
      (?P<code>{_CODE_DIGITS})
    # A code before it: "123456 is your Instagram code", "G-123456 is your Google
    # verification code". Only "is your": "2019 is the year of code" stays.
    | (?P<code_trail>\b{_CODE_DIGITS}
        (?=(?i:\s+is\s+your(?:\s+[\w'-]+){{0,4}}?\s+(?:(?:pass)?code|otp|pin)\b)))
    """,
    re.VERBOSE,
)
_KIND_OF_GROUP = {"url": "url", "email": "email", "code": "code", "code_trail": "code"}
# At one position the first kind listed wins (a URL over the e-mail or number inside it).
_PRIORITY = {"url": 0, "email": 1, "code": 2, "phone": 3, "name": 4}
# Every kind but names needs a digit, "@", "www." or "http": most messages skip the scan.
_MAY_BE_REDACTABLE = re.compile(r"[\d@]|(?i:www\.|http)")
# libphonenumber's matcher costs a fraction of a millisecond per text: it runs only where six
# digits stand close together, the least a phone number worth hiding has.
_PHONE_CANDIDATE = re.compile(r"\d(?:[^\w\n]{0,3}\d){5}")
_NAME_WORD = re.compile(r"[^\W\d_][\w'\u2019-]*")  # \u2019: the typographic apostrophe of O'Brien as phones type it


def phone_region(handles: Iterable[str], default: str = DEFAULT_REGION) -> str:
    """The region most of these handles' phone numbers belong to (by country calling code;
    ties go to the first region in alphabetical order), else `default`.

    A chat's numbers are read in its participants' region: people mostly write numbers the
    way the country they share writes them.
    """
    regions: Counter[str] = Counter()
    for handle in handles:
        if handle.startswith("+"):
            try:
                number = phonenumbers.parse(handle, None)
            except phonenumbers.NumberParseException:
                continue
            region = phonenumbers.region_code_for_country_code(number.country_code or 0)
            if region != "ZZ":
                regions[region] += 1
    if not regions:
        return default
    return min(regions, key=lambda region: (-regions[region], region))


@dataclass(frozen=True)
class KnownPeople:
    """Handles and names the snapshot knows, replaced wherever they appear in a text.

    Phone handles match a number written in any format with the same digits (a missing
    country code on either side is allowed, as when Contacts resolves a handle); e-mail
    handles match without case; a name matches as a whole word, case and accents as written,
    in full ("Aunt Hillary") or as any of its words ("Hillary").
    """

    phones: ContactBook
    emails: frozenset[str]
    names: re.Pattern[str] | None

    @classmethod
    def from_identities(cls, handles: Iterable[str], names: Iterable[str]) -> KnownPeople:
        """Build from handles (phone numbers, e-mails; others are ignored) and contact names."""
        emails: set[str] = set()
        phones: dict[str, str] = {}
        for handle in handles:
            key = normalize_handle(handle)
            if "@" in key:
                emails.add(key)
            elif key.isdigit():
                phones[key] = "known"  # a book whose every number names the same "person"
        words: set[str] = set()
        for name in names:
            name = name.strip()
            if name:
                words.add(name)
                words.update(word for word in _NAME_WORD.findall(name) if len(word) > 1)
        # Longest first, so "Aunt Hillary" is replaced whole rather than word by word.
        ordered = sorted(words, key=lambda word: (-len(word), word))
        pattern = re.compile("|".join(_bounded(word) for word in ordered)) if ordered else None
        return cls(ContactBook.from_mapping(phones), frozenset(emails), pattern)

    @classmethod
    def from_artifacts(cls, contacts_json: Path | None, sessions_json: Path) -> KnownPeople:
        """The people the snapshot knows: every handle and name of contacts.json, and every
        participant (handle, name) of sessions.json's chats."""
        handles: list[str] = []
        names: list[str] = []
        if contacts_json is not None:
            contacts: dict[str, str] = load_json(contacts_json.read_bytes())["contacts"]
            handles += contacts
            names += (name for name in contacts.values() if name)
        _, sessions = read_stream(sessions_json, "sessions")
        for session in sessions:
            for participant in session["participants"]:
                handles.append(participant["handle"])
                if participant["name"]:
                    names.append(participant["name"])
        return cls.from_identities(handles, names)

    def knows_phone(self, number: str) -> bool:
        """Whether a phone number as written is one of the known handles."""
        return len(self.phones) > 0 and self.phones.name_for(number) is not None


def _bounded(word: str) -> str:
    """A name as a whole-word pattern; scripts written without spaces match anywhere."""
    escaped = re.escape(word)
    if all(ord(c) < 0x250 for c in word):  # Latin: a name is a word of its own
        return rf"(?<!\w){escaped}(?!\w)"
    return escaped


class Redactor:
    """Replaces the kinds asked for by `PLACEHOLDERS`, counting them.

    Args:
        phones: Phone numbers.
        emails: E-mail addresses.
        codes: One-time codes: 4 to 8 digits (or `123-456`) right after "code", "passcode",
            "OTP", "PIN", "verification", "verify" or "2FA" (a few words and "is" or ":" may
            come between), or before "is your ... code"; the keyword itself stays.
        urls: `http://`, `https://` or `www.` up to whitespace, minus trailing punctuation.
        known: People to hide even when their kind is not redacted: their phone numbers as
            `[phone]`, e-mails as `[email]`, names as `[name]`.

    Years ("2019", "1999-2003"), dates, times ("10:30"), prices ("$1,299.99") and other bare
    numbers are left alone, as are digits inside longer numbers.
    """

    def __init__(
        self,
        *,
        phones: bool = False,
        emails: bool = False,
        codes: bool = False,
        urls: bool = False,
        known: KnownPeople | None = None,
    ) -> None:
        self.enabled = {"phone": phones, "email": emails, "code": codes, "url": urls, "name": True}
        self.known = known
        self.active = phones or emails or codes or urls or known is not None
        self._find_phones = phones or (known is not None and len(known.phones) > 0)

    def __call__(self, text: str, region: str = DEFAULT_REGION) -> tuple[str, Counter[str]]:
        """The redacted text and how many of each kind were replaced (only kinds with some).

        `region` is where numbers written without a country code are read (see the module).
        """
        counts: Counter[str] = Counter()
        if not self.active:
            return text, counts
        # (start, priority, end, kind, characters kept at the start) per candidate.
        found: list[tuple[int, int, int, str, int]] = []
        if _MAY_BE_REDACTABLE.search(text):
            for match in _PATTERN.finditer(text):
                kind = _KIND_OF_GROUP[str(match.lastgroup)]
                kept = match.end("code_lead") - match.start() if kind == "code" and match.group("code_lead") else 0
                found.append((match.start(), _PRIORITY[kind], match.end(), kind, kept))
            if self._find_phones and _PHONE_CANDIDATE.search(text):
                for number in PhoneNumberMatcher(text, region, leniency=Leniency.POSSIBLE):
                    found.append((number.start, _PRIORITY["phone"], number.end, "phone", 0))
        if self.known is not None and self.known.names is not None:
            for match in self.known.names.finditer(text):
                found.append((match.start(), _PRIORITY["name"], match.end(), "name", 0))
        if not found:
            return text, counts
        found.sort()
        pieces: list[str] = []
        copied = taken = 0  # end of the text copied so far; end of the last match taken
        for start, _, end, kind, kept in found:
            if start < taken:
                continue  # inside an earlier match, which shields it
            taken = end
            if self._wanted(kind, text[start:end]):
                pieces += (text[copied : start + kept], PLACEHOLDERS[kind])
                counts[kind] += 1
                copied = end
        if not counts:
            return text, counts
        pieces.append(text[copied:])
        return "".join(pieces), counts

    def _wanted(self, kind: str, matched: str) -> bool:
        if self.enabled[kind]:
            return True
        if self.known is None:
            return False
        if kind == "email":
            return matched.lower() in self.known.emails
        return kind == "phone" and self.known.knows_phone(matched)


def redact(
    text: str,
    *,
    phones: bool,
    emails: bool,
    codes: bool,
    urls: bool,
    region: str = DEFAULT_REGION,
    known: KnownPeople | None = None,
) -> tuple[str, Counter[str]]:
    """Replace phone numbers, e-mail addresses, one-time codes and URLs by placeholders.

    See `Redactor` for what each kind matches; `region` reads numbers written without a
    country code; `known` people are hidden too.

    Returns:
        The redacted text, and how many replacements of each kind were made (keys of
        `PLACEHOLDERS`, only those with at least one).
    """
    return Redactor(phones=phones, emails=emails, codes=codes, urls=urls, known=known)(text, region)
