"""Shaping chat sessions for fine-tuning: drop-in replacements for LangChain's chat-loader helpers.

`merge_chat_runs_in_session`, `merge_chat_runs`, `map_ai_messages_in_session`, `map_ai_messages`
(from `langchain_community.chat_loaders.utils`) and `convert_messages_for_finetuning` (from
`langchain_community.adapters.openai`) keep their signatures and return shapes. They differ where
the originals are wrong or slow:

- merging is linear in the size of a run (the original re-copies the accumulated text on every
  message: quadratic), keeps the events of every merged message, and records which messages were
  merged (`merged_guids`, `last_message_time`, `last_message_time_iso`);
- the owner can be made the assistant by direction (`is_from_me`) with `sender=OWNER_SENDER`, not
  only by sender name; messages of other senders become `HumanMessage`s again when re-mapped;
- the session's other keys (`functions`) are kept.

Messages are treated as immutable values: inputs are never modified, and a message that needs no
change is passed through as the same object (as LangChain's `map_ai_messages` already does) rather
than deep-copied, which would cost more than the rest of the shaping on a large history.

The other functions are the pure building blocks of the `merged.json` stage: `split_on_idle_gap`,
`window` and `redact`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Any

from langchain_core.chat_sessions import ChatSession
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from imessage_finetune.errors import ChatSessionError

__all__ = [
    "OWNER_SENDER",
    "PLACEHOLDERS",
    "convert_messages_for_finetuning",
    "map_ai_messages",
    "map_ai_messages_in_session",
    "merge_chat_runs",
    "merge_chat_runs_in_session",
    "redact",
    "split_on_idle_gap",
    "window",
]

OWNER_SENDER = "is_from_me"
"""`sender` value for `map_ai_messages*` meaning "the owner of the database".

With it the assistant side is every message whose `additional_kwargs["is_from_me"]` is true,
whatever its `sender` says. No contact is named like it. (The pipeline's `[dataset] ai_sender`
spells the same choice "me".)
"""

PLACEHOLDERS: dict[str, str] = {
    "phone": "[phone]",
    "email": "[email]",
    "code": "[code]",
    "url": "[url]",
}
"""What `redact` puts in place of each kind of match; the keys are the keys of its counter."""


def _session_with(chat_session: ChatSession, messages: list[BaseMessage]) -> ChatSession:
    """A new session holding `messages` and the other keys of `chat_session`."""
    result = ChatSession(messages=messages)
    if "functions" in chat_session:
        result["functions"] = chat_session["functions"]
    return result


def _text(message: BaseMessage, index: int) -> str:
    """The content of `message` (number `index` in its session), which must be a string."""
    if not isinstance(message.content, str):
        raise ChatSessionError(
            f"message {index} (guid {message.additional_kwargs.get('guid')!r}) has "
            f"{type(message.content).__name__} content; chat sessions must hold text only"
        )
    return message.content


def _continues_run(first: BaseMessage, message: BaseMessage) -> bool:
    """Whether `message` belongs to the run that `first` opened (same rule as LangChain's)."""
    sender = first.additional_kwargs.get("sender")
    return isinstance(message, type(first)) and sender is not None and message.additional_kwargs.get("sender") == sender


def _merge_run(run: list[BaseMessage], texts: list[str], delimiter: str) -> BaseMessage:
    """One message standing for the run `run` whose contents are `texts`."""
    first = run[0]
    if len(run) == 1:
        return first
    # Blank messages add nothing but a doubled delimiter, so they are left out; one join keeps
    # the cost linear in the length of the run.
    content = delimiter.join(text for text in texts if text and not text.isspace()).strip()
    kwargs: dict[str, Any] = dict(first.additional_kwargs)
    guids = [m.additional_kwargs["guid"] for m in run if "guid" in m.additional_kwargs]
    if guids:
        kwargs["merged_guids"] = guids
    last = run[-1].additional_kwargs
    for key in ("message_time", "message_time_iso"):
        if key in last:
            kwargs[f"last_{key}"] = last[key]
    if any("events" in m.additional_kwargs for m in run):
        kwargs["events"] = [event for m in run for event in (m.additional_kwargs.get("events") or [])]
    return first.model_copy(update={"content": content, "additional_kwargs": kwargs})


def merge_chat_runs_in_session(chat_session: ChatSession, delimiter: str = "\n\n") -> ChatSession:
    """Merge each run of consecutive messages from one sender into a single message.

    A run continues while the next message is an instance of the first one's class and has the
    same, non-null `additional_kwargs["sender"]` (LangChain's rule). A run of one message is
    passed through unchanged. A longer run becomes a copy of its first message whose

    - `content` is the run's non-blank contents joined by `delimiter`, stripped at both ends;
    - `additional_kwargs` are the first message's, plus `merged_guids` (the `guid` of every
      merged message that has one, in order), `last_message_time` and `last_message_time_iso`
      (the last message's `message_time` / `message_time_iso`, when present), and `events`
      (every message's events, concatenated) when any message has events.

    `message_time` stays the time of the first message. Compared with LangChain's version the
    text differs only where that one is inconsistent: it drops trailing whitespace of every
    merged message but the first and, with a non-whitespace `delimiter`, doubles the delimiter
    around blank messages; it also loses the events of later messages when the first has none.

    Args:
        chat_session: A chat session.
        delimiter: What separates the texts of a run.

    Returns:
        A new chat session with merged runs and the input's other keys.

    Raises:
        ChatSessionError: A message's content is not a string (a `ValueError`, as in LangChain).
    """
    merged: list[BaseMessage] = []
    run: list[BaseMessage] = []
    texts: list[str] = []
    for index, message in enumerate(chat_session["messages"]):
        text = _text(message, index)
        if run and _continues_run(run[0], message):
            run.append(message)
            texts.append(text)
            continue
        if run:
            merged.append(_merge_run(run, texts, delimiter))
        run, texts = [message], [text]
    if run:
        merged.append(_merge_run(run, texts, delimiter))
    return _session_with(chat_session, merged)


def merge_chat_runs(chat_sessions: Iterable[ChatSession]) -> Iterator[ChatSession]:
    """Merge runs of consecutive same-sender messages in each session (lazily).

    See `merge_chat_runs_in_session`, which this applies with the default delimiter.

    Args:
        chat_sessions: Chat sessions.

    Returns:
        An iterator over the merged sessions, in input order.
    """
    for chat_session in chat_sessions:
        yield merge_chat_runs_in_session(chat_session)


def _is_assistant(message: BaseMessage, sender: str) -> bool:
    """Whether `message` is the assistant's for `sender` (see `map_ai_messages_in_session`)."""
    if sender == OWNER_SENDER:
        return message.additional_kwargs.get("is_from_me") is True
    return bool(message.additional_kwargs.get("sender") == sender)


def _recast(message: BaseMessage, cls: type[HumanMessage] | type[AIMessage]) -> BaseMessage:
    """`message` as an instance of `cls`, keeping content, kwargs, metadata, name and id."""
    return cls(
        content=message.content,
        additional_kwargs=dict(message.additional_kwargs),
        response_metadata=dict(message.response_metadata),
        name=message.name,
        id=message.id,
    )


def map_ai_messages_in_session(chat_sessions: ChatSession, sender: str) -> ChatSession:
    """Make the messages of `sender` the assistant's (`AIMessage`) and the others the user's.

    A message is the assistant's when

    - `sender` is `OWNER_SENDER`: its `additional_kwargs["is_from_me"]` is true, so the owner's
      messages are found by direction, whatever name (or none) they carry;
    - otherwise: its `additional_kwargs["sender"]` equals `sender` (LangChain's rule), e.g. the
      owner's configured name such as "Me", or a contact's name or handle. A contact who shares
      that name is matched too: use `OWNER_SENDER` to select the owner unambiguously.

    Assistant messages become `AIMessage`s and `AIMessage`s of anyone else become
    `HumanMessage`s (LangChain leaves those as assistant messages, so mapping twice mixed two
    voices); content, `additional_kwargs`, `response_metadata`, `name` and `id` are kept. Other
    message classes (system, tool, ...) and messages already of the right class pass through.

    Args:
        chat_sessions: One chat session (the name is LangChain's).
        sender: A sender name, or `OWNER_SENDER`.

    Returns:
        A new chat session with the input's other keys.
    """
    messages: list[BaseMessage] = []
    for message in chat_sessions["messages"]:
        if _is_assistant(message, sender):
            if not isinstance(message, AIMessage):
                message = _recast(message, AIMessage)
        elif isinstance(message, AIMessage):
            message = _recast(message, HumanMessage)
        messages.append(message)
    return _session_with(chat_sessions, messages)


def map_ai_messages(chat_sessions: Iterable[ChatSession], sender: str) -> Iterator[ChatSession]:
    """Apply `map_ai_messages_in_session` to each session (lazily).

    Args:
        chat_sessions: Chat sessions.
        sender: A sender name, or `OWNER_SENDER` for the owner's messages by `is_from_me`.

    Returns:
        An iterator over the mapped sessions, in input order.
    """
    for chat_session in chat_sessions:
        yield map_ai_messages_in_session(chat_session, sender)


def _openai_message(message: BaseMessage) -> dict[str, Any]:
    """`message` as an OpenAI chat message dict, as LangChain's `convert_message_to_dict`.

    One correction: `name` also comes from the message's own `name` field (LangChain's community
    adapter reads only `additional_kwargs["name"]`, which still wins when present).
    """
    result: dict[str, Any]
    if isinstance(message, ChatMessage):
        result = {"role": message.role, "content": message.content}
    elif isinstance(message, HumanMessage):
        result = {"role": "user", "content": message.content}
    elif isinstance(message, AIMessage):
        result = {"role": "assistant", "content": message.content}
        for key in ("function_call", "tool_calls"):
            if key in message.additional_kwargs:
                result[key] = message.additional_kwargs[key]
                # OpenAI's shape for a call without text is null content, not "".
                if result["content"] == "":
                    result["content"] = None
    elif isinstance(message, SystemMessage):
        result = {"role": "system", "content": message.content}
    elif isinstance(message, FunctionMessage):
        result = {"role": "function", "content": message.content}
    elif isinstance(message, ToolMessage):
        result = {"role": "tool", "content": message.content, "tool_call_id": message.tool_call_id}
    else:
        raise ChatSessionError(f"cannot convert a {type(message).__name__} to an OpenAI chat message")
    name = message.additional_kwargs.get("name", message.name)
    if name is not None:
        result["name"] = name
    return result


def convert_messages_for_finetuning(sessions: Iterable[ChatSession]) -> list[list[dict[str, Any]]]:
    """Convert sessions to OpenAI chat-format message lists, one list per session.

    Messages become `{"role": "user" | "assistant" | "system" | ..., "content": ...}` dicts
    (plus `name`, `function_call`, `tool_calls`, `tool_call_id` where they apply), exactly as
    LangChain's `convert_message_to_dict`, except that a message's own `name` field is used too.
    Sessions without an `AIMessage` are dropped, as LangChain does: they teach nothing.

    Args:
        sessions: The chat sessions.

    Returns:
        One list of message dicts per kept session, in input order.

    Raises:
        ChatSessionError: A kept session holds a message class with no OpenAI role.
    """
    return [
        [_openai_message(message) for message in session["messages"]]
        for session in sessions
        if any(isinstance(message, AIMessage) for message in session["messages"])
    ]


def _seconds(message: BaseMessage, key: str, default: float | None = None) -> float:
    """`additional_kwargs[key]` of `message` as unix seconds, or `default` when absent."""
    value = message.additional_kwargs.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ChatSessionError(
            f"message {message.additional_kwargs.get('guid')!r} has no numeric {key!r} "
            f"(got {value!r}); splitting on idle gaps needs unix seconds"
        )
    return value


def split_on_idle_gap(messages: Sequence[BaseMessage], gap_seconds: int) -> list[list[BaseMessage]]:
    """Split a conversation wherever nobody wrote for more than `gap_seconds`.

    The silence before a message is its `message_time` minus the latest end seen so far in the
    current part, a message's end being its `last_message_time` (set by merging runs) or else its
    `message_time`; so merged runs and slightly out-of-order timestamps are measured correctly.
    A silence of exactly `gap_seconds` does not split.

    Args:
        messages: Messages in chronological order, with `additional_kwargs["message_time"]`.
        gap_seconds: The longest silence inside one conversation; must be positive.

    Returns:
        The non-empty parts, in order; `[]` for no messages.

    Raises:
        ChatSessionError: `gap_seconds` is not positive, or a message has no numeric time.
    """
    if gap_seconds <= 0:
        raise ChatSessionError(f"the idle gap must be positive, got {gap_seconds} seconds")
    parts: list[list[BaseMessage]] = []
    latest_end = 0.0
    for message in messages:
        start = _seconds(message, "message_time")
        end = _seconds(message, "last_message_time", start)
        if parts and start - latest_end <= gap_seconds:
            parts[-1].append(message)
            latest_end = max(latest_end, end)
        else:
            parts.append([message])
            latest_end = end
    return parts


def window(
    messages: Sequence[BaseMessage],
    max_tokens: int,
    overlap_messages: int,
    count_tokens: Callable[[BaseMessage], int],
    is_reply: Callable[[Any], bool] | None = None,
) -> list[list[BaseMessage]]:
    """Cut a long conversation into overlapping windows that each fit a token budget.

    Every window is a contiguous slice whose tokens (the sum of `count_tokens` over its
    messages) are at most `max_tokens`, and ends on an `AIMessage`: human messages after a
    window's last reply are dropped from it, so no window lacks a reply. Windows are built
    greedily: each one starts as early as allowed and takes as many messages as fit, then the
    next one starts `overlap_messages` messages before the end of the previous one (later when
    the budget or a short previous window requires it, but always after the previous start),
    and must contain a reply the previous window did not. Every reply that fits the budget on
    its own ends up in some window.

    A message longer than the whole budget cannot be in any window and is left out, without
    truncation (a cut-off reply would teach the model to stop mid-sentence); no window spans
    it. Callers report such messages as those with `count_tokens(m) > max_tokens`.

    `count_tokens` is called exactly once per message and the rest is linear in their number.

    Args:
        messages: A conversation in order.
        max_tokens: The budget of one window; must be positive.
        overlap_messages: How many messages consecutive windows share; must not be negative.
        count_tokens: Tokens of one message (must not be negative).
        is_reply: Which messages are replies (default: `AIMessage`s); lets the merged.json
            stage window its lightweight turns with the same code.

    Returns:
        The windows, in order; `[]` when no reply fits.

    Raises:
        ChatSessionError: A parameter is out of range or `count_tokens` returned a negative number.
    """
    if max_tokens <= 0:
        raise ChatSessionError(f"the token budget must be positive, got {max_tokens}")
    if overlap_messages < 0:
        raise ChatSessionError(f"the overlap must not be negative, got {overlap_messages}")
    tokens = [count_tokens(message) for message in messages]
    if any(count < 0 for count in tokens):
        raise ChatSessionError("count_tokens returned a negative number of tokens")
    prefix = [0, *accumulate(tokens)]  # prefix[i] = tokens of messages[:i]
    reply_test = is_reply or (lambda message: isinstance(message, AIMessage))
    is_reply_at = [reply_test(message) for message in messages]
    total = len(messages)

    windows: list[list[BaseMessage]] = []
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
        windows.append(list(messages[start : end + 1]))
        start = max(end + 1 - overlap_messages, start + 1)
        reply = end + 1


_CODE_WORD = r"(?:pass)?code|otp|pin|verification|verify|2fa"
_CODE_DIGITS = r"(?:\d{3}[- ]\d{3}|\d{4,8})(?!\d|[-.,:/]\d)"
_REDACTABLE = re.compile(
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
    # International: "+" then 8 to 15 digits, at most two of " .-()" between two digits.
    | (?P<phone_intl>(?<![\w+])\+\d(?:[\s.()-]{{0,2}}\d){{7,14}}(?!\d))
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-555-123-4567, 5551234567.
    | (?P<phone_us>(?<![\w$€£¥+./,-])(?:1[\s.-]?)?(?:\(\d{{3}}\)\s?|\d{{3}}[\s.-]?)
        \d{{3}}[\s.-]?\d{{4}}(?!\w|[-.,:/]\d))
    """,
    re.VERBOSE,
)
# Every kind needs a digit, "@", "www." or "http": most messages have none and skip the scan.
_MAY_BE_REDACTABLE = re.compile(r"[\d@]|(?i:www\.|http)")
_KIND_OF_GROUP = {
    "url": "url",
    "email": "email",
    "code": "code",
    "code_trail": "code",
    "phone_intl": "phone",
    "phone_us": "phone",
}


def redact(text: str, *, phones: bool, emails: bool, codes: bool, urls: bool) -> tuple[str, Counter[str]]:
    """Replace phone numbers, e-mail addresses, one-time codes and URLs by placeholders.

    Replacements are `PLACEHOLDERS` (`[phone]`, `[email]`, `[code]`, `[url]`). One scan finds
    every kind, earliest match first, so a kind that is not redacted still shields its text
    from the others (the digits of a URL are not taken for a phone number when `urls` is off).

    - URLs: `http://`, `https://` or `www.` up to whitespace, minus trailing punctuation.
    - Codes: 4 to 8 digits (or `123-456`) right after "code", "passcode", "OTP", "PIN",
      "verification", "verify" or "2FA" (a few words and "is" or ":" may come between), or
      before "is your ... code"; the keyword itself stays.
    - Phones: "+" and 8 to 15 digits, or North American ten-digit numbers with an optional
      leading 1. Local formats of other countries and 7-digit numbers are not recognised.

    Years ("2019", "1999-2003"), dates, times ("10:30"), prices ("$1,299.99") and other bare
    numbers are left alone, as are digits inside longer numbers.

    Args:
        text: The text.
        phones: Redact phone numbers.
        emails: Redact e-mail addresses.
        codes: Redact one-time codes.
        urls: Redact URLs.

    Returns:
        The redacted text, and how many replacements of each kind were made (keys of
        `PLACEHOLDERS`, only those with at least one).
    """
    enabled = {"phone": phones, "email": emails, "code": codes, "url": urls}
    counts: Counter[str] = Counter()
    if not any(enabled.values()) or not _MAY_BE_REDACTABLE.search(text):
        return text, counts

    def replace(match: re.Match[str]) -> str:
        kind = _KIND_OF_GROUP[str(match.lastgroup)]
        if not enabled[kind]:
            return match.group(0)
        counts[kind] += 1
        return (match.group("code_lead") or "") + PLACEHOLDERS[kind]

    return _REDACTABLE.sub(replace, text), counts
