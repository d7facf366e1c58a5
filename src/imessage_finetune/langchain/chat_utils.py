"""Shaping chat sessions for fine-tuning: drop-in replacements for LangChain's chat-loader helpers.

Thin adapters: every rule lives in `imessage_finetune.shaping`, which the `merged` and
`dataset` stages apply too, so these functions give the pipeline's examples (the README's
recipe is tested to give train.jsonl exactly).

`merge_chat_runs_in_session`, `merge_chat_runs`, `map_ai_messages_in_session`, `map_ai_messages`
(from `langchain_community.chat_loaders.utils`) and `convert_messages_for_finetuning` (from
`langchain_community.adapters.openai`) keep their signatures and return shapes. They differ where
the originals are wrong or slow:

- merging is linear in the size of a run (the original re-copies the accumulated text on every
  message: quadratic), keeps the events of every merged message, records which messages were
  merged (`guids`, `last_message_time`, `last_message_time_iso`), and keeps the owner and a
  contact apart when a loader gives them the same `sender` (by `is_from_me`);
- the owner can be made the assistant by direction (`is_from_me`) with `sender=OWNER_SENDER`, not
  only by sender name; messages of other senders become `HumanMessage`s again when re-mapped;
  `exact=False` compares names as the pipeline's `ai_sender` does;
- the session's other keys (`functions`, and `chat` from this package's loaders) are kept.

Messages are treated as immutable values: inputs are never modified, and a message that needs no
change is passed through as the same object (as LangChain's `map_ai_messages` already does) rather
than deep-copied, which would cost more than the rest of the shaping on a large history.

The other steps of the pipeline's shaping, on the same sessions: `split_on_idle_gaps`
(conversations), `prepare_for_finetuning` (group chats, redaction, windows within the token
budget) and `hold_out` (the validation split); and the message-level building blocks
`split_on_idle_gap`, `window` and `redact`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast

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

from imessage_finetune import shaping
from imessage_finetune.config import DatasetConfig
from imessage_finetune.errors import ChatSessionError
from imessage_finetune.evaluation.heldout import Span, split_by_time
from imessage_finetune.shaping import OWNER_SENDER, PLACEHOLDERS, KnownPeople, redact
from imessage_finetune.tokens import TokenCounter

__all__ = [
    "OWNER_SENDER",
    "PLACEHOLDERS",
    "IMessageChatSession",
    "convert_messages_for_finetuning",
    "hold_out",
    "hold_out_newest",
    "map_ai_messages",
    "map_ai_messages_in_session",
    "merge_chat_runs",
    "merge_chat_runs_in_session",
    "prepare_for_finetuning",
    "redact",
    "split_on_idle_gap",
    "split_on_idle_gaps",
    "window",
]


class IMessageChatSession(ChatSession, total=False):
    """A `ChatSession` from this package's loaders: also the chat it comes from.

    `chat` is the chat's entry in sessions.json without its messages: `chat_id`, `chat_guid`,
    `chat_identifier`, `display_name`, `service`, `is_group` and `participants` (each with
    `handle` and `name`). Group chats, redaction and the validation split read it.
    """

    chat: dict[str, Any]


# Sessions keep their own type through every step (an IMessageChatSession stays one).
Session = TypeVar("Session", bound=ChatSession)

# Message classes in LangChain's order of `convert_message_to_dict`, and their kinds (a chunk
# counts as its message class).
_KINDS: tuple[tuple[type[BaseMessage], str], ...] = (
    (ChatMessage, "chat"),
    (HumanMessage, "human"),
    (AIMessage, "ai"),
    (SystemMessage, "system"),
    (FunctionMessage, "function"),
    (ToolMessage, "tool"),
)


def _kind(message: BaseMessage) -> str:
    """The shaping rules' name for a message's class ("human", "ai", ...)."""
    for cls, kind in _KINDS:
        if isinstance(message, cls):
            return kind
    return type(message).__name__


def _chat(chat_session: ChatSession) -> Mapping[str, Any] | None:
    chat: Mapping[str, Any] | None = cast(Mapping[str, Any], chat_session).get("chat")
    return chat


def _session_with(chat_session: Session, messages: list[BaseMessage]) -> Session:
    """A new session holding `messages` and the other keys of `chat_session`."""
    result = cast(Session, {**chat_session})
    result["messages"] = messages
    return result


def _text(message: BaseMessage, index: int) -> str:
    """The content of `message` (number `index` in its session), which must be a string."""
    if not isinstance(message.content, str):
        raise ChatSessionError(
            f"message {index} (guid {message.additional_kwargs.get('guid')!r}) has "
            f"{type(message.content).__name__} content; chat sessions must hold text only"
        )
    return message.content


def _speaker(message: BaseMessage) -> Any:
    return shaping.speaker(_kind(message), message.additional_kwargs)


def merge_chat_runs_in_session(chat_session: Session, delimiter: str = "\n\n") -> Session:
    """Merge each run of consecutive messages from one speaker into a single message.

    A run continues while the next message is of the first one's class and has the same,
    non-null `additional_kwargs["sender"]` (LangChain's rule) and the same `is_from_me`. A run of
    one message is passed through unchanged. A longer run becomes a copy of its first message
    whose

    - `content` is the run's non-blank contents joined by `delimiter`, stripped at both ends;
    - `additional_kwargs` are the first message's, plus `guids` (the `guid` of every merged
      message that has one, in order), `last_message_time` and `last_message_time_iso` (the
      last message's `message_time` / `message_time_iso`, when present), and `events` (every
      message's events, concatenated) when any message has events.

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
    messages = chat_session["messages"]
    texts = [_text(message, index) for index, message in enumerate(messages)]
    merged: list[BaseMessage] = []
    start = 0
    for run in shaping.runs(messages, _speaker):
        first = run[0]
        if len(run) > 1:
            first = first.model_copy(
                update={
                    "content": shaping.join_run(texts[start : start + len(run)], delimiter),
                    "additional_kwargs": shaping.run_kwargs([m.additional_kwargs for m in run]),
                }
            )
        merged.append(first)
        start += len(run)
    return _session_with(chat_session, merged)


def merge_chat_runs(chat_sessions: Iterable[Session], delimiter: str = "\n\n") -> Iterator[Session]:
    """Merge runs of consecutive same-speaker messages in each session (lazily).

    See `merge_chat_runs_in_session`.

    Args:
        chat_sessions: Chat sessions.
        delimiter: What separates the texts of a run (the pipeline's `merge_separator`).

    Returns:
        An iterator over the merged sessions, in input order.
    """
    for chat_session in chat_sessions:
        yield merge_chat_runs_in_session(chat_session, delimiter)


def _recast(message: BaseMessage, cls: type[HumanMessage] | type[AIMessage]) -> BaseMessage:
    """`message` as an instance of `cls`, keeping content, kwargs, metadata, name and id."""
    return cls(
        content=message.content,
        additional_kwargs=dict(message.additional_kwargs),
        response_metadata=dict(message.response_metadata),
        name=message.name,
        id=message.id,
    )


def map_ai_messages_in_session(chat_sessions: Session, sender: str, *, exact: bool = True) -> Session:
    """Make the messages of `sender` the assistant's (`AIMessage`) and the others the user's.

    A message is the assistant's when (`shaping.ai_matcher`)

    - `sender` is `OWNER_SENDER`: its `additional_kwargs["is_from_me"]` is true, so the owner's
      messages are found by direction, whatever name (or none) they carry;
    - otherwise: its `additional_kwargs["sender"]` equals `sender` (LangChain's rule), e.g. the
      owner's configured name such as "Me", or a contact's name or handle. A contact who shares
      that name is matched too: use `OWNER_SENDER` to select the owner unambiguously.

    With `exact=False` the rule is the pipeline's `[dataset] ai_sender` instead: "me" in any case
    is the owner, and a name matches `sender` or `handle` without case.

    Assistant messages become `AIMessage`s and `AIMessage`s of anyone else become
    `HumanMessage`s (LangChain leaves those as assistant messages, so mapping twice mixed two
    voices); content, `additional_kwargs`, `response_metadata`, `name` and `id` are kept. Other
    message classes (system, tool, ...) and messages already of the right class pass through.

    Args:
        chat_sessions: One chat session (the name is LangChain's).
        sender: A sender name, or `OWNER_SENDER`.
        exact: LangChain's comparison (the default), or the pipeline's.

    Returns:
        A new chat session with the input's other keys.
    """
    is_ai = shaping.ai_matcher(sender, exact=exact)
    messages: list[BaseMessage] = []
    for message in chat_sessions["messages"]:
        if is_ai(message.additional_kwargs):
            if not isinstance(message, AIMessage):
                message = _recast(message, AIMessage)
        elif isinstance(message, AIMessage):
            message = _recast(message, HumanMessage)
        messages.append(message)
    return _session_with(chat_sessions, messages)


def map_ai_messages(chat_sessions: Iterable[Session], sender: str, *, exact: bool = True) -> Iterator[Session]:
    """Apply `map_ai_messages_in_session` to each session (lazily).

    Args:
        chat_sessions: Chat sessions.
        sender: A sender name, or `OWNER_SENDER` for the owner's messages by `is_from_me`.
        exact: LangChain's comparison (the default), or the pipeline's `ai_sender` rule.

    Returns:
        An iterator over the mapped sessions, in input order.
    """
    for chat_session in chat_sessions:
        yield map_ai_messages_in_session(chat_session, sender, exact=exact)


def _openai_message(message: BaseMessage) -> dict[str, Any]:
    """`message` as an OpenAI chat message dict, as LangChain's `convert_message_to_dict`.

    One correction: `name` also comes from the message's own `name` field (LangChain's community
    adapter reads only `additional_kwargs["name"]`, which still wins when present).
    """
    return shaping.openai_message(
        _kind(message),
        message.content,
        name=message.additional_kwargs.get("name", message.name),
        role=getattr(message, "role", None),
        kwargs=message.additional_kwargs,
        tool_call_id=getattr(message, "tool_call_id", None),
    )


def convert_messages_for_finetuning(
    sessions: Iterable[ChatSession], *, system_prompt: str = ""
) -> list[list[dict[str, Any]]]:
    """Convert sessions to OpenAI chat-format message lists, one list per session.

    Messages become `{"role": "user" | "assistant" | "system" | ..., "content": ...}` dicts
    (plus `name`, `function_call`, `tool_calls`, `tool_call_id` where they apply), exactly as
    LangChain's `convert_message_to_dict`, except that a message's own `name` field is used too.
    Sessions without an `AIMessage` are dropped, as LangChain does: they teach nothing.

    Args:
        sessions: The chat sessions.
        system_prompt: A system message to put first in every list ("" for none), as the
            pipeline's `[dataset] system_prompt`.

    Returns:
        One list of message dicts per kept session, in input order.

    Raises:
        ChatSessionError: A kept session holds a message class with no OpenAI role.
    """
    return [
        shaping.openai_example([_openai_message(m) for m in session["messages"]], system_prompt)["messages"]
        for session in sessions
        if any(isinstance(message, AIMessage) for message in session["messages"])
    ]


def _kwargs(message: BaseMessage) -> Mapping[str, Any]:
    return message.additional_kwargs


def split_on_idle_gap(messages: Sequence[BaseMessage], gap_seconds: int) -> list[list[BaseMessage]]:
    """Split a conversation wherever nobody wrote for more than `gap_seconds`.

    See `shaping.split_on_idle_gap`: the silence is measured from the latest end so far (a
    merged message ends at its `last_message_time`); exactly `gap_seconds` does not split.

    Args:
        messages: Messages in chronological order, with `additional_kwargs["message_time"]`.
        gap_seconds: The longest silence inside one conversation; must be positive.

    Returns:
        The non-empty parts, in order; `[]` for no messages.

    Raises:
        ChatSessionError: `gap_seconds` is not positive, or a message has no numeric time.
    """
    return shaping.split_on_idle_gap(messages, gap_seconds, _kwargs)


def split_on_idle_gaps(chat_sessions: Iterable[Session], gap_seconds: int) -> Iterator[Session]:
    """Each session cut into one session per conversation (`split_on_idle_gap`), lazily.

    Every part keeps the session's other keys (`chat`, `functions`).
    """
    for chat_session in chat_sessions:
        for part in split_on_idle_gap(chat_session["messages"], gap_seconds):
            yield _session_with(chat_session, part)


def window(
    messages: Sequence[BaseMessage],
    max_tokens: int,
    overlap_messages: int,
    count_tokens: Callable[[BaseMessage], int],
    is_reply: Callable[[BaseMessage], bool] | None = None,
) -> list[list[BaseMessage]]:
    """Cut a long conversation into overlapping windows that each fit a token budget.

    See `shaping.window`: every window is a contiguous slice of at most `max_tokens` ending on a
    reply, consecutive windows share `overlap_messages` messages, and a message longer than the
    budget is in no window. `count_tokens` is called once per message.

    Args:
        messages: A conversation in order.
        max_tokens: The budget of one window; must be positive.
        overlap_messages: How many messages consecutive windows share; must not be negative.
        count_tokens: Tokens of one message (must not be negative).
        is_reply: Which messages are replies (default: `AIMessage`s).

    Returns:
        The windows, in order; `[]` when no reply fits.

    Raises:
        ChatSessionError: A parameter is out of range or `count_tokens` returned a negative number.
    """
    return shaping.window(
        messages,
        max_tokens,
        overlap_messages,
        count_tokens,
        is_reply or (lambda message: isinstance(message, AIMessage)),
    )


def prepare_for_finetuning(
    chat_sessions: Iterable[Session],
    options: DatasetConfig,
    counter: TokenCounter,
    known: KnownPeople | None = None,
) -> Iterator[Session]:
    """The training examples of mapped conversations, by the `[dataset]` settings (lazily).

    As the `merged` stage (`shaping.Shaper`): group chats are left out with
    `group_chats = "exclude"`; conversations without an `AIMessage` are dropped; each message is
    redacted as configured, special-token strings are neutralised, and in group chats each other
    sender gets an OpenAI `name` (or a "Name: " prefix), "Person N" when redaction hides them;
    then each conversation is cut into windows of at most `max_tokens` (with the system prompt,
    counted by `counter`) that end on an `AIMessage`. Sessions of one chat must come in a row:
    labels are kept per chat (`chat["chat_id"]`).

    Args:
        chat_sessions: Merged conversations whose AI side is mapped (`map_ai_messages`).
        options: The `[dataset]` settings.
        counter: The target model's token counter.
        known: The people `redact_known_names` hides (`KnownPeople.from_artifacts`).

    Returns:
        One session per example, with the input's other keys.
    """
    shaper = shaping.Shaper(options, counter, known)
    current: object = None
    prepare = shaper.preparation(None)
    for chat_session in chat_sessions:
        chat = _chat(chat_session)
        key = chat.get("chat_id") if chat else None
        if key is None or key != current:
            current, prepare = key, shaper.preparation(chat)
        messages = chat_session["messages"]
        if shaper.excludes(chat) or not shaper.keeps(_kind(m) for m in messages):
            continue
        prepared: list[BaseMessage] = []
        for index, message in enumerate(messages):
            sender = message.additional_kwargs.get("sender") or ""
            content, name = prepare(_text(message, index), isinstance(message, AIMessage), sender)
            if content != message.content or name is not None:
                message = message.model_copy(update={"content": content, "name": name or message.name})
            prepared.append(message)
        lines = [_openai_message(m) for m in prepared]
        for span in shaper.windows(lines, [isinstance(m, AIMessage) for m in prepared]):
            yield _session_with(chat_session, prepared[span.start : span.stop])


def hold_out(chat_sessions: Iterable[Session], share: float, seed: int) -> tuple[list[Session], list[Session]]:
    """Sessions for training and sessions held out for validation, by chat, as `doit dataset`
    splits them (`[dataset] validation_share` and `split_seed`; sessions need `chat`)."""
    train: list[Session] = []
    validation: list[Session] = []
    for chat_session in chat_sessions:
        chat = _chat(chat_session) or {}
        held_out = shaping.in_validation(chat.get("chat_id", 0), share, seed)
        (validation if held_out else train).append(chat_session)
    return train, validation


def hold_out_newest(chat_sessions: Iterable[Session], share: float, days: float) -> tuple[list[Session], list[Session]]:
    """Examples to keep and the newest ones held out for evaluation, split by time as `doit
    dataset` splits heldout.jsonl off (`[dataset] heldout_share` and `heldout_days`): an
    example spanning the cutoff is in neither list."""
    sessions = list(chat_sessions)
    spans = []
    for chat_session in sessions:
        first = chat_session["messages"][0].additional_kwargs
        last = chat_session["messages"][-1].additional_kwargs
        spans.append(Span(float(first["message_time"]), float(last.get("last_message_time", last["message_time"]))))
    by_time = split_by_time(spans, share=share, days=days)
    kept = [session for session, side in zip(sessions, by_time.sides, strict=True) if side == "train"]
    heldout = [session for session, side in zip(sessions, by_time.sides, strict=True) if side == "heldout"]
    return kept, heldout
