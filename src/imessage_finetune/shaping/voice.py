"""Who is the assistant: the one rule that picks the voice a model learns.

Both the `merged` stage (`[dataset] ai_sender`) and the LangChain-compatible
`map_ai_messages` ask `ai_matcher`. They differ only in how a name is compared, a parameter:

- `exact=False`, the pipeline's setting: "me" in any case is the owner (by `is_from_me`);
  any other value is compared without case with the message's `sender` or `handle`, so
  "tortoise", a contact's phone number and the owner's configured name all work;
- `exact=True`, LangChain's documented rule: the name equals `sender` exactly, and only the
  `OWNER_SENDER` keyword selects the owner by `is_from_me` (no contact is named like it, while
  a contact could be called "me").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

OWNER = "me"
"""`[dataset] ai_sender` value (any case) meaning the owner of the database."""

OWNER_SENDER = "is_from_me"
"""`sender` of `map_ai_messages` meaning the owner of the database, whatever their name."""

Matcher = Callable[[Mapping[str, Any]], bool]


def _is_owner(kwargs: Mapping[str, Any]) -> bool:
    return kwargs.get("is_from_me") is True


def ai_matcher(sender: str, *, exact: bool = False) -> Matcher:
    """A predicate on a message's `additional_kwargs`: is it the voice being learned?

    Args:
        sender: The owner keyword (`OWNER` when not `exact`, `OWNER_SENDER` when `exact`),
            else a sender's name (or, when not `exact`, a handle).
        exact: LangChain's comparison (exact `sender` equality) instead of the pipeline's.

    Returns:
        The predicate.
    """
    if sender == OWNER_SENDER if exact else sender.casefold() == OWNER:
        return _is_owner
    if exact:
        return lambda kwargs: bool(kwargs.get("sender") == sender)
    wanted = sender.casefold()
    return lambda kwargs: (
        (kwargs.get("sender") or "").casefold() == wanted or (kwargs.get("handle") or "").casefold() == wanted
    )
