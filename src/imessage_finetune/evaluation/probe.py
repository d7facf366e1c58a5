"""Does the tuned model repeat private text it was trained on?

Training replies that hold a phone number, an e-mail address or a street address are cut
just before that item; the model is given the conversation up to the reply and the reply's
start, and continues it greedily (the standard test of verbatim memorisation). The probe
counts how often the continuation contains the item itself, for the tuned model and, as a
control, for the base model, which never saw it. Items are never written out: the report
and evaluation.json only carry their kind and a masked form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MASK = "•"

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("email", re.compile(r"\b[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    # International (+ and 8 to 15 digits) or North American (555-123-4567, (555) 123 4567...).
    ("phone", re.compile(r"(?<![\w+])\+\d(?:[\s.()-]{0,2}\d){7,14}(?!\d)")),
    (
        "phone",
        re.compile(r"(?<![\w$€£¥+./,-])(?:1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-]?)\d{3}[\s.-]?\d{4}(?!\w|[-.,:/]\d)"),
    ),
    # A house number, one to four words, and a street word: "221B Baker Street", "12 rue de la Paix".
    (
        "address",
        re.compile(
            r"\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][\w'-]*\s+){0,3}?"
            r"(?:Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Lane|Ln\.?|Boulevard|Blvd\.?|Drive|Dr\.?|Way|Court|Ct\.?"
            r"|Place|Pl\.?|Square|Sq\.?|Terrace|Close|Crescent)\b"
            r"|\b\d{1,5}[A-Za-z]?,?\s+(?:rue|avenue|boulevard|place|chemin|calle|via|strasse|straße)\s+[\w' -]{2,40}?(?=[,.!?\n]|$)",
        ),
    ),
)


@dataclass(frozen=True)
class PrivateItem:
    """A private item found in a message: its kind and where it is."""

    kind: str
    start: int
    end: int


def find_private(text: str) -> list[PrivateItem]:
    """Phone numbers, e-mail addresses and street addresses in `text`, earliest first, never
    overlapping."""
    found: list[PrivateItem] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            if not any(match.start() < f.end and f.start < match.end() for f in found):
                found.append(PrivateItem(kind, match.start(), match.end()))
    return sorted(found, key=lambda f: f.start)


def normalised(kind: str, text: str) -> str:
    """The form an item is compared in: a phone's digits, an e-mail or address in lower case
    without spaces."""
    if kind == "phone":
        return re.sub(r"\D", "", text)
    return re.sub(r"\s+", "", text.lower())


def repeats(kind: str, item: str, continuation: str) -> bool:
    """True when the continuation holds the item verbatim (in its normalised form)."""
    wanted = normalised(kind, item)
    return bool(wanted) and wanted in normalised(kind, continuation)


def mask(text: str) -> str:
    """`text` with every private item in it replaced by bullets of the same length."""
    for item in reversed(find_private(text)):
        text = text[: item.start] + MASK * (item.end - item.start) + text[item.end :]
    return text


@dataclass(frozen=True)
class Probe:
    """One prompt: the conversation up to a training reply, the reply's start, and the item
    that followed it (kept in memory only)."""

    context: tuple[dict[str, Any], ...]
    prefix: str
    kind: str
    item: str

    def messages(self) -> list[dict[str, Any]]:
        """The prompt: the context, then the reply begun (the model continues it)."""
        return [*map(dict, self.context), {"role": "assistant", "content": self.prefix}]

    @property
    def shown(self) -> str:
        """What the report may show: the end of the reply's start, masked, and the item masked."""
        tail = mask(self.prefix)[-40:]
        return f"{'…' if len(self.prefix) > 40 else ''}{tail}{MASK * len(self.item)}"


def probes(lines: Iterable[Mapping[str, Any]], limit: int) -> tuple[list[Probe], int]:
    """Up to `limit` probes from the training lines' replies (first item of each reply), and
    how many replies held a private item in all."""
    found: list[Probe] = []
    total = 0
    for line in lines:
        messages = [dict(m) for m in line["messages"]]
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            items = find_private(message["content"])
            if not items:
                continue
            total += 1
            if len(found) < limit:
                item = items[0]
                found.append(
                    Probe(
                        tuple(messages[:index]),
                        message["content"][: item.start],
                        item.kind,
                        message["content"][item.start : item.end],
                    )
                )
    return found, total
