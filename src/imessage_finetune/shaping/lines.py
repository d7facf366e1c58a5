"""OpenAI chat lines: the one place a turn becomes an OpenAI chat message and an example a line.

Used by the `merged` stage (to count a turn's tokens as the line will hold it), the `dataset`
stage (to write train.jsonl) and the LangChain-compatible `convert_messages_for_finetuning`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from imessage_finetune.errors import ChatSessionError, DatasetError
from imessage_finetune.openai_file import SPECIAL_TOKEN_RE
from imessage_finetune.tokens import TokenCounter

# The OpenAI role of each message kind (LangChain's message `type`); "chat" messages carry
# their own role.
ROLES = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "function": "function",
    "tool": "tool",
}
SPECIAL_TOKEN_PLACEHOLDER = "[special token]"
# OpenAI accepts only these characters in a message's `name`.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def openai_message(
    kind: str,
    content: Any,
    *,
    name: str | None = None,
    role: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    tool_call_id: str | None = None,
) -> dict[str, Any]:
    """One message as OpenAI's chat format holds it, as LangChain's `convert_message_to_dict`.

    Args:
        kind: The message kind: "human", "ai", "system", "function", "tool", or "chat" (then
            `role` is the role).
        content: The text.
        name: The speaker's `name` field, when not None.
        role: A "chat" message's role.
        kwargs: The message's `additional_kwargs`: an AI message's `function_call` and
            `tool_calls` are copied from them (content "" then becomes None, OpenAI's shape).
        tool_call_id: A tool message's call id.

    Returns:
        `{"role", "content"}` plus, where they apply, the calls, `tool_call_id` and `name`.

    Raises:
        ChatSessionError: The kind has no OpenAI role.
    """
    if kind == "chat":
        message: dict[str, Any] = {"role": role, "content": content}
    elif kind in ROLES:
        message = {"role": ROLES[kind], "content": content}
    else:
        raise ChatSessionError(f"cannot convert a {kind} message to an OpenAI chat message")
    if kind == "ai" and kwargs:
        for key in ("function_call", "tool_calls"):
            if key in kwargs:
                message[key] = kwargs[key]
                if message["content"] == "":
                    message["content"] = None
    if kind == "tool":
        message["tool_call_id"] = tool_call_id
    if name is not None:
        message["name"] = name
    return message


def openai_example(messages: Sequence[dict[str, Any]], system_prompt: str = "") -> dict[str, Any]:
    """One training line: `{"messages": [...]}`, the system prompt first when there is one."""
    if system_prompt:
        return {"messages": [{"role": "system", "content": system_prompt}, *messages]}
    return {"messages": list(messages)}


def openai_name(sender: str) -> str:
    """A sender's name as OpenAI's `name` field accepts it (letters, digits, _ and -).

    Accents are dropped (José -> Jose); a name with no Latin letters left (张伟) gets a stable
    label derived from it, so two such speakers in one group stay apart.
    """
    ascii_only = "".join(c for c in unicodedata.normalize("NFKD", sender) if not unicodedata.combining(c))
    name = _NAME_UNSAFE.sub("_", ascii_only).strip("_")[:64]
    if len(name) * 2 < len(sender.strip()):
        name = f"{name[:40]}_{hashlib.sha256(sender.encode()).hexdigest()[:8]}".lstrip("_")
    return name


def neutralise_special_tokens(text: str) -> tuple[str, int]:
    """`text` with special-token strings (`<|endoftext|>`...) replaced, which OpenAI refuses;
    and how many were replaced."""
    if "<|" not in text:
        return text, 0
    return SPECIAL_TOKEN_RE.subn(SPECIAL_TOKEN_PLACEHOLDER, text)


def message_tokens(counter: TokenCounter, message: Mapping[str, object]) -> int:
    """What one OpenAI chat message adds to its example's tokens (as the validator counts)."""
    return counter.count_example([message]) - counter.count_example([])


def example_budget(max_tokens: int, system_prompt: str, counter: TokenCounter) -> int:
    """Tokens left for a window's turns once the reply priming and system prompt are counted,
    so that no line exceeds `max_tokens` when train.jsonl is checked.

    Raises:
        DatasetError: Nothing is left.
    """
    system = message_tokens(counter, {"role": "system", "content": system_prompt}) if system_prompt else 0
    budget = max_tokens - counter.count_example([]) - system
    if budget <= 0:
        raise DatasetError(
            f"dataset.max_tokens ({max_tokens}) leaves no room after the system prompt "
            f"({system} tokens); raise it or shorten dataset.system_prompt"
        )
    return budget


def in_validation(chat_id: int, share: float, seed: int) -> bool:
    """Whether a chat is held out. By chat, not by example: overlapping windows of one chat
    on both sides would let validation loss measure memorisation."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{chat_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
