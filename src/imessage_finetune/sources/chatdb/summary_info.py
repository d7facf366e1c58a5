"""Edits and unsends recorded in `message.message_summary_info` (a binary plist).

Keys (notes/chatdb.md section 7): `otr` {part: {lo, le}} the original parts and their UTF-16
ranges; `ec` {part: [{t: typedstream, d: seconds since 2001}, ...]} every version of an edited
part, the original first; `ep` edited parts; `rp` unsent ("retracted") parts; `amc`, `ust`
unknown flags present on ordinary messages too.
"""

from __future__ import annotations

import plistlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from imessage_finetune.errors import TypedStreamError
from imessage_finetune.sources.chatdb import typedstream


@dataclass(frozen=True)
class EditEvent:
    """One version of an edited message part."""

    apple_seconds: float
    """Seconds since 2001-01-01 UTC, as stored in `d`."""
    text: str | None
    """Decoded from the typedstream in `t`; None if absent or undecodable."""


@dataclass(frozen=True)
class SummaryInfo:
    """What `message_summary_info` says about a message's edits and unsends."""

    edited_parts: frozenset[int]
    """`ep`: parts edited at least once."""
    unsent_parts: frozenset[int]
    """`rp`: parts the sender unsent."""
    original_parts: frozenset[int]
    """Keys of `otr`: the parts the message had when sent."""
    history: Mapping[int, tuple[EditEvent, ...]]
    """`ec`: every version of each edited part, the original first."""

    def final_text(self, part: int) -> str | None:
        """The last version of an edited part (None if the part has no edit history)."""
        events = self.history.get(part)
        return events[-1].text if events else None

    @property
    def fully_unsent(self) -> bool:
        """Every part the message had was unsent (rp covers otr, or otr empty and rp non-empty)."""
        return bool(self.unsent_parts) and self.original_parts <= self.unsent_parts


def parse(blob: bytes | None) -> SummaryInfo | None:
    """Read a `message_summary_info` value; None for NULL or empty.

    Raises TypedStreamError if the value is not a binary plist dictionary of the known shape.
    An edit version whose typedstream cannot be decoded keeps its time with text None.
    """
    if not blob:
        return None
    try:
        root = plistlib.loads(blob, fmt=plistlib.FMT_BINARY)
    # plistlib reports damage as InvalidFileException (a ValueError) but lets containers
    # nested thousands deep exhaust the stack.
    except (ValueError, RecursionError) as exc:
        raise TypedStreamError("message_summary_info is not a binary plist") from exc
    if not isinstance(root, dict):
        raise TypedStreamError("message_summary_info is not a dictionary")
    original = root.get("otr", {})
    versions = root.get("ec", {})
    if not isinstance(original, dict) or not isinstance(versions, dict):
        raise TypedStreamError("message_summary_info has an unexpected shape")
    history: dict[int, tuple[EditEvent, ...]] = {}
    for part, events in versions.items():
        if not isinstance(events, list):
            raise TypedStreamError("message_summary_info has an unexpected shape")
        history[_part_index(part)] = tuple(_event(event) for event in events)
    return SummaryInfo(
        edited_parts=_part_set(root.get("ep", [])),
        unsent_parts=_part_set(root.get("rp", [])),
        original_parts=frozenset(_part_index(part) for part in original),
        history=MappingProxyType(history),
    )


def _part_index(value: object) -> int:
    """A part index as stored: an int in `ep`/`rp`, a decimal string as a dictionary key."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise TypedStreamError("message_summary_info has an unexpected part index")


def _part_set(values: object) -> frozenset[int]:
    if not isinstance(values, list):
        raise TypedStreamError("message_summary_info has an unexpected shape")
    return frozenset(_part_index(value) for value in values)


def _event(event: object) -> EditEvent:
    if not isinstance(event, dict):
        raise TypedStreamError("message_summary_info has an unexpected shape")
    seconds = event.get("d")
    # Apple stores a real; an integer is accepted if a float can hold it.
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or abs(seconds) > 1e300:
        raise TypedStreamError("message_summary_info edit has no time")
    blob = event.get("t")
    text = None
    if isinstance(blob, bytes):
        try:
            text = typedstream.decode_text(blob)
        except TypedStreamError:
            text = None  # keep the edit's time even when its text is unreadable
    return EditEvent(apple_seconds=float(seconds), text=text)
