"""Cutting chats into conversations and conversations into training windows.

Both work on any message representation: the caller says where a message's
`additional_kwargs` are (`split_on_idle_gap`), and how many tokens it costs and whether it is
a reply (`window`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate
from typing import Any, TypeVar, cast

from imessage_finetune.errors import ChatSessionError

Item = TypeVar("Item")
# Times are ints or floats; bool, an int subclass, is not a time.
_NUMBER_TYPES = frozenset({int, float})


def _seconds(kwargs: Mapping[str, Any], key: str, default: float | None = None) -> float:
    """`kwargs[key]` as unix seconds, or `default` when absent."""
    value = kwargs.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ChatSessionError(
            f"message {kwargs.get('guid')!r} has no numeric {key!r} "
            f"(got {value!r}); splitting on idle gaps needs unix seconds"
        )
    return value


def split_on_idle_gap(
    items: Sequence[Item], gap_seconds: int, kwargs_of: Callable[[Item], Mapping[str, Any]]
) -> list[list[Item]]:
    """Split a conversation wherever nobody wrote for more than `gap_seconds`.

    The silence before a message is its `message_time` minus the latest end seen so far in the
    current part, a message's end being its `last_message_time` (set by merging runs) or else its
    `message_time`; so merged runs and slightly out-of-order timestamps are measured correctly.
    A silence of exactly `gap_seconds` does not split.

    Args:
        items: Messages in chronological order.
        gap_seconds: The longest silence inside one conversation; must be positive.
        kwargs_of: A message's `additional_kwargs` (with `message_time`, unix seconds).

    Returns:
        The non-empty parts, in order; `[]` for no messages.

    Raises:
        ChatSessionError: `gap_seconds` is not positive, or a message has no numeric time.
    """
    if gap_seconds <= 0:
        raise ChatSessionError(f"the idle gap must be positive, got {gap_seconds} seconds")
    parts: list[list[Item]] = []
    latest_end = 0.0
    for item in items:
        kwargs = kwargs_of(item)
        # Checked in full only when not plainly a number: most messages are.
        start = cast(float, kwargs.get("message_time"))
        if type(start) not in _NUMBER_TYPES:
            start = _seconds(kwargs, "message_time")
        end = cast(float, kwargs.get("last_message_time", start))
        if end is not start and type(end) not in _NUMBER_TYPES:
            end = _seconds(kwargs, "last_message_time")
        if parts and start - latest_end <= gap_seconds:
            parts[-1].append(item)
            latest_end = max(latest_end, end)
        else:
            parts.append([item])
            latest_end = end
    return parts


def window(
    items: Sequence[Item],
    max_tokens: int,
    overlap_messages: int,
    count_tokens: Callable[[Item], int],
    is_reply: Callable[[Item], bool],
) -> list[list[Item]]:
    """Cut a long conversation into overlapping windows that each fit a token budget.

    Every window is a contiguous slice whose tokens (the sum of `count_tokens` over its
    messages) are at most `max_tokens`, and ends on a reply: messages after a window's last
    reply are dropped from it, so no window lacks a reply. Windows are built greedily: each one
    starts as early as allowed and takes as many messages as fit, then the next one starts
    `overlap_messages` messages before the end of the previous one (later when the budget or a
    short previous window requires it, but always after the previous start), and must contain a
    reply the previous window did not. Every reply that fits the budget on its own ends up in
    some window.

    A message longer than the whole budget cannot be in any window and is left out, without
    truncation (a cut-off reply would teach the model to stop mid-sentence); no window spans
    it. Callers report such messages as those with `count_tokens(m) > max_tokens`.

    `count_tokens` is called exactly once per message and the rest is linear in their number.

    Args:
        items: A conversation in order.
        max_tokens: The budget of one window; must be positive.
        overlap_messages: How many messages consecutive windows share; must not be negative.
        count_tokens: Tokens of one message (must not be negative).
        is_reply: Which messages are replies (the assistant's).

    Returns:
        The windows, in order; `[]` when no reply fits.

    Raises:
        ChatSessionError: A parameter is out of range or `count_tokens` returned a negative number.
    """
    if max_tokens <= 0:
        raise ChatSessionError(f"the token budget must be positive, got {max_tokens}")
    if overlap_messages < 0:
        raise ChatSessionError(f"the overlap must not be negative, got {overlap_messages}")
    tokens = [count_tokens(item) for item in items]
    if any(count < 0 for count in tokens):
        raise ChatSessionError("count_tokens returned a negative number of tokens")
    prefix = [0, *accumulate(tokens)]  # prefix[i] = tokens of items[:i]
    is_reply_at = [is_reply(item) for item in items]
    total = len(items)

    windows: list[list[Item]] = []
    start = 0  # earliest index the next window may start at
    reply = 0  # scan position for the next window's first new reply
    while True:
        while reply < total and not (is_reply_at[reply] and tokens[reply] <= max_tokens):
            reply += 1
        if reply == total:
            return windows
        while prefix[reply + 1] - prefix[start] > max_tokens:
            start += 1
        end = reply
        while end + 1 < total and prefix[end + 2] - prefix[start] <= max_tokens:
            end += 1
        while not is_reply_at[end]:
            end -= 1
        windows.append(list(items[start : end + 1]))
        start = max(end + 1 - overlap_messages, start + 1)
        reply = end + 1
