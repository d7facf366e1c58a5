"""Runs: consecutive messages of one speaker become one turn.

One rule for the `merged` stage (plain dicts) and LangChain's `merge_chat_runs` (message
objects): the callers say how to read their messages, this module decides.

- **Who continues a run** (`speaker`): a message continues the run before it when it is of
  the same kind (human, AI...), names the same, non-null `sender`, and has the same
  `is_from_me`. LangChain documents a run as "a sequence of messages from the same sender";
  `is_from_me` keeps the owner and a contact apart when a loader gives both the same `sender`
  (LangChain's own iMessage loader names the owner's messages by the chat's handle).
- **The merged text** (`join_run`): the non-blank texts joined once by the delimiter (linear
  in the run's length) and stripped at both ends, as LangChain's accumulation ends up; a run
  of one message keeps its text as it is.
- **The merged record** (`run_kwargs`): the first message's `additional_kwargs` (or the
  listed keys of them), then `last_message_time`, `guids` (every merged message's guid, in
  order) and `last_message_time_iso` taken from the run, and `events` when any message has
  some.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")


def speaker(kind: str, kwargs: Mapping[str, Any]) -> Hashable | None:
    """Who wrote a message, for merging: messages with equal speakers form runs.

    None (a message that names no sender) never continues a run nor is continued.
    """
    sender = kwargs.get("sender")
    if sender is None:
        return None
    return (kind, sender, kwargs.get("is_from_me"))


def runs(items: Sequence[Item], speaker_of: Callable[[Item], Hashable | None]) -> Iterator[Sequence[Item]]:
    """The runs of `items`, in order: maximal slices whose items have one (non-None) speaker."""
    start = 0
    current = speaker_of(items[0]) if items else None
    for index in range(1, len(items)):
        following = speaker_of(items[index])
        if current is None or following != current:
            yield items[start:index]
            start = index
        current = following
    if items:
        yield items[start:]


def join_run(texts: Sequence[str], delimiter: str) -> str:
    """The text of a run: its non-blank texts joined by `delimiter`, stripped at both ends.

    A run of one message keeps its text unchanged.
    """
    if len(texts) == 1:
        return texts[0]
    # Blank messages would only double the delimiter; one join keeps it linear.
    return delimiter.join(text for text in texts if text and not text.isspace()).strip()


def run_kwargs(run: Sequence[Mapping[str, Any]], keep: Collection[str] | None = None) -> dict[str, Any]:
    """The `additional_kwargs` of the turn a run becomes (see the module's docstring).

    Args:
        run: The `additional_kwargs` of the run's messages, in order (at least one).
        keep: The keys of the first message to keep (all when None).

    Returns:
        A new dict; the inputs are not modified.
    """
    first, last = run[0], run[-1]
    record = dict(first) if keep is None else {key: first[key] for key in keep}
    # A message that is itself a merged turn brings its own end and guids.
    end = last.get("last_message_time")
    if end is None:
        end = last.get("message_time")
    if end is not None:
        record["last_message_time"] = end
    if len(run) == 1 and "guids" not in first:  # most runs: one message, one guid
        guids = [first["guid"]] if "guid" in first else []
        events = "events" in first
    else:
        guids, events = [], False
        for kwargs in run:
            if "guids" in kwargs:
                guids += kwargs["guids"]
            elif "guid" in kwargs:
                guids.append(kwargs["guid"])
            events = events or "events" in kwargs
    if guids:
        record["guids"] = guids
    end_iso = last.get("last_message_time_iso")
    if end_iso is None:
        end_iso = last.get("message_time_iso")
    if end_iso is not None:
        record["last_message_time_iso"] = end_iso
    if events:
        record["events"] = [event for kwargs in run for event in (kwargs.get("events") or [])]
    return record
