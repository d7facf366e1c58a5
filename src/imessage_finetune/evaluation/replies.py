"""The held-out replies read back from heldout.jsonl: each reply of the learned voice with
the conversation before it, and the other people's messages of the same conversations."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]


@dataclass(frozen=True)
class HeldoutReply:
    """One real reply and what came before it in its conversation (system prompt included)."""

    context: tuple[Message, ...]
    real: str


@dataclass(frozen=True)
class HeldoutSet:
    """Every held-out conversation, its replies, and the other side's messages."""

    conversations: tuple[tuple[Message, ...], ...]
    replies: tuple[HeldoutReply, ...]
    others: tuple[str, ...]


def read_heldout(lines: Iterable[Mapping[str, Any]]) -> HeldoutSet:
    """The held-out set from heldout.jsonl's lines (OpenAI chat fine-tuning form)."""
    conversations, replies, others = [], [], []
    for line in lines:
        messages = tuple(dict(m) for m in line["messages"])
        conversations.append(messages)
        for index, message in enumerate(messages):
            if message["role"] == "assistant" and message.get("weight", 1) != 0 and message["content"].strip():
                replies.append(HeldoutReply(messages[:index], message["content"]))
            elif message["role"] == "user" and message["content"].strip():
                others.append(message["content"])
    return HeldoutSet(tuple(conversations), tuple(replies), tuple(others))


def evenly(items: Sequence[Any], limit: int) -> list[Any]:
    """At most `limit` items spread evenly over `items`, in order (all of them if fewer)."""
    if len(items) <= limit:
        return list(items)
    return [items[(i * len(items)) // limit] for i in range(limit)]


def trimmed_context(context: Sequence[Message], keep: int) -> list[Message]:
    """The system prompt (if any) and the last `keep` messages: what generation is prompted
    with, so one very long conversation does not dominate the time evaluation takes."""
    system = [dict(m) for m in context[:1] if m["role"] == "system"]
    body = [dict(m) for m in context[len(system) :]]
    return system + body[-keep:]
