"""What a message row is (tapback, system event, unsent, edited, attachment...) and its final text.

The column values that identify each kind are those macOS writes (see `schema.py`); the text
comes from `text`, else from the typedstream in `attributedBody`, with edits and unsent parts
applied and attachment characters removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import NamedTuple

from imessage_finetune.errors import TypedStreamError
from imessage_finetune.sources.chatdb import summary_info, typedstream
from imessage_finetune.sources.chatdb.schema import (
    ATTACHMENT_CHARACTER,
    ORDINARY_ASSOCIATION,
    POLL_VOTE,
    REPLACEMENT_CHARACTER,
    STICKER,
    TAPBACK_RANGE,
    URL_BALLOON,
)


class Exclusion(StrEnum):
    """Why a message row is not an utterance; the names used in every report."""

    TAPBACK = "tapback"
    STICKER = "sticker"
    POLL_VOTE = "poll_vote"
    SYSTEM_EVENT = "system_event"
    UNSENT = "unsent"
    ATTACHMENT_ONLY = "attachment_only"
    AUDIO = "audio"
    APP_MESSAGE = "app_message"
    SMS_REACTION = "sms_reaction"
    FAILED_SEND = "failed_send"
    EMPTY = "empty"
    ORPHAN = "orphan"
    UNDECODABLE = "undecodable"
    OUTSIDE_DATES = "outside_dates"


# Reactions that SMS/RCS phones (and old iPhones) send as ordinary text.
SMS_REACTION = re.compile(
    r"^(?:Loved|Liked|Disliked|Laughed at|Emphasi[sz]ed|Questioned) "
    r"(?:[“\"].*[”\"]|an image|a movie|a video|an attachment|a message|a link|a sticker)$",
    re.DOTALL,
)


class Verdict(NamedTuple):
    """The outcome for one row: the text to keep, or why it is left out.

    A named tuple (immutable, like a frozen dataclass, at a third of its cost per row).
    """

    text: str = ""
    excluded: Exclusion | None = None
    from_attributed_body: bool = False


def _parse_summary(blob: object) -> summary_info.SummaryInfo | None:
    if not blob:
        return None
    try:
        return summary_info.parse(bytes(blob))  # type: ignore[call-overload]
    except TypedStreamError:
        return None  # history unreadable: fall back to the current body


def _body(row: Mapping[str, object], info: summary_info.SummaryInfo | None) -> tuple[str, bool]:
    """The current text and whether it came from attributedBody."""
    text = row["text"]
    blob = row["attributedBody"]
    edited = bool(row["date_edited"])
    partly_unsent = bool(info and info.unsent_parts)
    # Edited and partly-unsent rows keep the original in `text`; the blob holds the current,
    # and without a blob the edit history's last versions are the current text.
    if edited and info and info.edited_parts and not blob:
        finals = [info.final_text(part) for part in sorted(info.edited_parts)]
        if all(finals):
            return "".join(t for t in finals if t), False
    if isinstance(text, str) and text and not ((edited or partly_unsent) and blob):
        return text, False
    if blob:
        data = bytes(blob)  # type: ignore[call-overload]
        if partly_unsent:
            assert info is not None
            decoded = typedstream.decode(data)
            return "".join(t for part, t in decoded.parts() if part not in info.unsent_parts), True
        return typedstream.decode_text(data), True
    return (text if isinstance(text, str) else ""), False


# Verdicts without text are the same for every row: built once.
_EXCLUDED = {kind: Verdict(excluded=kind) for kind in Exclusion}


def classify(row: Mapping[str, object], drop_sms_reactions: bool = True) -> Verdict:
    """Classify one `message` row (columns named as in `schema.py`)."""
    association = row["associated_message_type"] or 0
    if association:  # 0, an ordinary message, is the common case: it passes every test here
        if association == STICKER:
            return _EXCLUDED[Exclusion.STICKER]
        if association == POLL_VOTE:
            return _EXCLUDED[Exclusion.POLL_VOTE]
        if association in TAPBACK_RANGE or association not in ORDINARY_ASSOCIATION:
            return _EXCLUDED[Exclusion.TAPBACK]
    if row["item_type"]:
        return _EXCLUDED[Exclusion.SYSTEM_EVENT]
    if row["date_retracted"]:
        return _EXCLUDED[Exclusion.UNSENT]
    summary = row["message_summary_info"]
    info = _parse_summary(summary) if summary else None
    if info is not None and info.fully_unsent:
        return _EXCLUDED[Exclusion.UNSENT]
    if row["error"]:
        return _EXCLUDED[Exclusion.FAILED_SEND]
    balloon = row["balloon_bundle_id"]
    if balloon and balloon != URL_BALLOON:
        return _EXCLUDED[Exclusion.APP_MESSAGE]
    try:
        raw, from_blob = _body(row, info)
    except TypedStreamError:
        return _EXCLUDED[Exclusion.UNDECODABLE]
    text = raw.replace(ATTACHMENT_CHARACTER, "").replace(REPLACEMENT_CHARACTER, "").strip()
    if not text:
        if row["is_audio_message"]:
            return Verdict(excluded=Exclusion.AUDIO, from_attributed_body=from_blob)
        if ATTACHMENT_CHARACTER in raw or row["cache_has_attachments"]:
            return Verdict(excluded=Exclusion.ATTACHMENT_ONLY, from_attributed_body=from_blob)
        return Verdict(excluded=Exclusion.EMPTY, from_attributed_body=from_blob)
    if drop_sms_reactions and SMS_REACTION.match(text):
        return _EXCLUDED[Exclusion.SMS_REACTION]
    return Verdict(text, None, from_blob)
