"""Tests for chat_utils: LangChain-compatible shaping, idle gaps and windows.

Expected outputs of LangChain's helpers are written out by hand from their source
(langchain_community.chat_loaders.utils and langchain_community.adapters.openai); the package
itself is not a test dependency.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
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

from imessage_finetune.langchain.chat_utils import (
    OWNER_SENDER,
    IMessageChatSession,
    convert_messages_for_finetuning,
    hold_out,
    map_ai_messages,
    map_ai_messages_in_session,
    merge_chat_runs,
    merge_chat_runs_in_session,
    prepare_for_finetuning,
    split_on_idle_gap,
    split_on_idle_gaps,
    window,
)
from imessage_finetune.config import DatasetConfig
from imessage_finetune.tokens import counter_for
from imessage_finetune.errors import ChatSessionError, FinetuneError

T0 = 1_700_000_000


def msg(
    content: Any,
    sender: str | None,
    t: int = T0,
    *,
    me: bool = False,
    guid: str | None = None,
    cls: type[BaseMessage] = HumanMessage,
    **extra: Any,
) -> BaseMessage:
    """A message shaped like the reader's output."""
    kwargs = {
        "message_time": t,
        "message_time_iso": datetime.fromtimestamp(t, UTC).isoformat(),
        "sender": sender,
        "is_from_me": me,
        "guid": guid if guid is not None else f"guid-{t}",
        **extra,
    }
    return cls(content=content, additional_kwargs=kwargs)


def contents(session: ChatSession) -> list[tuple[str, Any]]:
    """(class name, content) of each message of a session."""
    return [(type(m).__name__, m.content) for m in session["messages"]]


# --- merge_chat_runs -------------------------------------------------------------------------


def test_merge_joins_runs_like_langchain() -> None:
    """Consecutive messages of one sender become one, joined by a blank line; order is kept."""
    session = ChatSession(
        messages=[
            msg("hi", "Alice", T0),
            msg("you there?", "Alice", T0 + 5),
            msg("yes", "Me", T0 + 9, me=True),
            msg("good", "Alice", T0 + 20),
        ]
    )
    assert contents(merge_chat_runs_in_session(session)) == [
        ("HumanMessage", "hi\n\nyou there?"),
        ("HumanMessage", "yes"),
        ("HumanMessage", "good"),
    ]


def test_merge_whitespace_matches_langchain() -> None:
    """Merged text is stripped at both ends, blank messages vanish, a lone message is untouched."""
    session = ChatSession(
        messages=[
            msg("  hi", "Alice", T0),
            msg("   ", "Alice", T0 + 1),
            msg("there ", "Alice", T0 + 2),
            msg(" lone ", "Bob", T0 + 3),
        ]
    )
    # LangChain: strip("  hi\n\n   ") = "hi"; strip("hi" + "\n\n" + "there ") = "hi\n\nthere".
    assert contents(merge_chat_runs_in_session(session)) == [
        ("HumanMessage", "hi\n\nthere"),
        ("HumanMessage", " lone "),
    ]


def test_merge_keeps_inner_whitespace_where_langchain_drops_it() -> None:
    """Trailing spaces of a middle message are kept (LangChain drops them by re-stripping)."""
    session = ChatSession(
        messages=[msg("a", "Alice", T0), msg("b  ", "Alice", T0 + 1), msg("c", "Alice", T0 + 2)]
    )
    assert contents(merge_chat_runs_in_session(session)) == [("HumanMessage", "a\n\nb  \n\nc")]


def test_merge_custom_delimiter_skips_blank_messages() -> None:
    """With a visible delimiter a blank message does not leave a doubled delimiter."""
    session = ChatSession(
        messages=[msg("a", "Alice", T0), msg("", "Alice", T0 + 1), msg("b", "Alice", T0 + 2)]
    )
    merged = merge_chat_runs_in_session(session, delimiter=" | ")
    assert contents(merged) == [("HumanMessage", "a | b")]


def test_merge_records_guids_and_last_time() -> None:
    """The merged message keeps the first message's kwargs and records the run's guids and end
    under the names merged.json uses."""
    first = msg("a", "Alice", T0, guid="g1", service="iMessage")
    session = ChatSession(
        messages=[
            first,
            msg("b", "Alice", T0 + 60, guid="g2"),
            msg("c", "Alice", T0 + 90, guid="g3"),
        ]
    )
    (merged,) = merge_chat_runs_in_session(session)["messages"]
    assert merged.additional_kwargs == {
        **first.additional_kwargs,
        "guids": ["g1", "g2", "g3"],
        "last_message_time": T0 + 90,
        "last_message_time_iso": "2023-11-14T22:14:50+00:00",
    }
    assert merged.additional_kwargs["message_time"] == T0


def test_merge_needs_a_sender_and_the_same_class() -> None:
    """Messages without a sender, or of another class, start a new run (LangChain's rule)."""
    session = ChatSession(
        messages=[
            msg("a", None, T0),
            msg("b", None, T0 + 1),
            msg("c", "Me", T0 + 2, me=True),
            msg("d", "Me", T0 + 3, me=True, cls=AIMessage),
            msg("e", "Me", T0 + 4, me=True, cls=AIMessage),
        ]
    )
    assert contents(merge_chat_runs_in_session(session)) == [
        ("HumanMessage", "a"),
        ("HumanMessage", "b"),
        ("HumanMessage", "c"),
        ("AIMessage", "d\n\ne"),
    ]


def test_merge_rejects_non_text_content_with_a_value_error() -> None:
    """Content that is not a string raises ChatSessionError, a ValueError as in LangChain."""
    session = ChatSession(messages=[msg("a", "Alice"), msg([{"type": "text", "text": "b"}], "Bob")])
    with pytest.raises(ChatSessionError, match=r"message 1 .* list content") as raised:
        merge_chat_runs_in_session(session)
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, FinetuneError)


def test_merge_concatenates_events_even_when_the_first_has_none() -> None:
    """Events of every merged message are kept (LangChain loses them if the first has none)."""
    session = ChatSession(
        messages=[
            msg("a", "Alice", T0),
            msg("b", "Alice", T0 + 1, events=[{"t": 1}]),
            msg("c", "Alice", T0 + 2, events=[{"t": 2}]),
        ]
    )
    (merged,) = merge_chat_runs_in_session(session)["messages"]
    assert merged.additional_kwargs["events"] == [{"t": 1}, {"t": 2}]


def test_merge_leaves_inputs_alone_and_passes_single_messages_through() -> None:
    """The input session is not modified; unmerged messages are the same objects."""
    a, b, c = msg("a", "Alice", T0), msg("b", "Alice", T0 + 1), msg("c", "Bob", T0 + 2)
    session = ChatSession(messages=[a, b, c], functions=[{"name": "f"}])
    before = [m.model_dump() for m in session["messages"]]
    merged = merge_chat_runs_in_session(session)
    assert [m.model_dump() for m in session["messages"]] == before
    assert merged["messages"][1] is c
    assert merged["functions"] == [{"name": "f"}]


def test_merge_chat_runs_is_lazy_and_uses_the_default_delimiter() -> None:
    """merge_chat_runs yields one merged session per input, consuming the input lazily."""
    pulled: list[int] = []

    def sessions() -> Iterable[ChatSession]:
        for i in range(2):
            pulled.append(i)
            yield ChatSession(messages=[msg(f"{i}a", "A", T0), msg(f"{i}b", "A", T0 + 1)])

    merged = merge_chat_runs(sessions())
    assert pulled == []
    assert contents(next(merged)) == [("HumanMessage", "0a\n\n0b")]
    assert pulled == [0]
    assert [contents(s) for s in merged] == [[("HumanMessage", "1a\n\n1b")]]


class CopyCountingDelimiter(str):
    """A delimiter that counts the characters of every string built with it as an operand."""

    copied: int

    def __new__(cls, value: str) -> CopyCountingDelimiter:
        instance = super().__new__(cls, value)
        instance.copied = 0
        return instance

    def join(self, parts: Iterable[str]) -> str:
        result = str.join(str(self), parts)
        self.copied += len(result)
        return result

    def __add__(self, other: str) -> str:
        result = str(self) + other
        self.copied += len(result)
        return result

    def __radd__(self, other: str) -> str:
        result = other + str(self)
        self.copied += len(result)
        return result


def _langchain_style_merge(texts: list[str], delimiter: str) -> str:
    """LangChain's accumulation loop, reduced to its string handling."""
    merged = texts[0]
    for text in texts[1:]:
        merged = (merged + delimiter + text).strip()
    return merged


def test_copy_counter_detects_quadratic_concatenation() -> None:
    """The counting delimiter sees LangChain's loop copy a quadratic number of characters."""
    texts = ["x"] * 2000
    delimiter = CopyCountingDelimiter("\n\n")
    _langchain_style_merge(texts, delimiter)
    assert delimiter.copied > 1000 * len(texts)


def test_merge_copies_a_linear_number_of_characters() -> None:
    """Merging a 2000-message run builds its text once: characters copied = length of result."""
    texts = ["x"] * 2000
    delimiter = CopyCountingDelimiter("\n\n")
    session = ChatSession(messages=[msg(t, "Alice", T0 + i) for i, t in enumerate(texts)])
    (merged,) = merge_chat_runs_in_session(session, delimiter=delimiter)["messages"]
    assert merged.content == "\n\n".join(texts)
    assert delimiter.copied == len(merged.content) < 3 * len(texts)


def test_merge_smoke_100k_message_run() -> None:
    """A 100,000-message run from one sender merges into one message of the expected length."""
    n = 100_000
    kwargs = {"sender": "Alice", "message_time": T0}
    session = ChatSession(messages=[HumanMessage(content="x", additional_kwargs=kwargs)] * n)
    (merged,) = merge_chat_runs_in_session(session)["messages"]
    assert len(merged.content) == n + 2 * (n - 1)


# --- map_ai_messages -------------------------------------------------------------------------


def test_map_by_sender_name_like_langchain() -> None:
    """Messages whose sender equals the given name become AIMessages, the rest stay human."""
    session = ChatSession(
        messages=[
            msg("hi", "Alice", T0),
            msg("hey", "Me", T0 + 1, me=True),
            msg("yo", "Bob", T0 + 2),
        ]
    )
    assert contents(map_ai_messages_in_session(session, "Alice")) == [
        ("AIMessage", "hi"),
        ("HumanMessage", "hey"),
        ("HumanMessage", "yo"),
    ]
    assert contents(map_ai_messages_in_session(session, "Me")) == [
        ("HumanMessage", "hi"),
        ("AIMessage", "hey"),
        ("HumanMessage", "yo"),
    ]


def test_map_owner_by_is_from_me_whatever_the_sender_says() -> None:
    """OWNER_SENDER selects the owner's messages by is_from_me, even with no or a wrong sender."""
    session = ChatSession(
        messages=[
            msg("from a contact", "+15555550100", T0),
            # LangChain's iMessage loader puts the recipient's handle or nothing in own messages.
            msg("mine, 1:1", "+15555550100", T0 + 1, me=True),
            msg("mine, group", None, T0 + 2, me=True),
        ]
    )
    assert contents(map_ai_messages_in_session(session, OWNER_SENDER)) == [
        ("HumanMessage", "from a contact"),
        ("AIMessage", "mine, 1:1"),
        ("AIMessage", "mine, group"),
    ]


def test_map_owner_ignores_a_contact_with_the_owners_name() -> None:
    """With OWNER_SENDER a contact named like the owner stays human; by name both would match."""
    session = ChatSession(
        messages=[msg("owner", "Alex", T0, me=True), msg("namesake", "Alex", T0 + 1)]
    )
    assert contents(map_ai_messages_in_session(session, OWNER_SENDER)) == [
        ("AIMessage", "owner"),
        ("HumanMessage", "namesake"),
    ]
    assert contents(map_ai_messages_in_session(session, "Alex")) == [
        ("AIMessage", "owner"),
        ("AIMessage", "namesake"),
    ]


def test_map_twice_turns_the_previous_voice_back_into_human() -> None:
    """Re-mapping to another sender demotes the old assistant's messages to HumanMessages."""
    session = ChatSession(messages=[msg("a", "Alice", T0), msg("m", "Me", T0 + 1, me=True)])
    once = map_ai_messages_in_session(session, "Alice")
    assert contents(map_ai_messages_in_session(once, OWNER_SENDER)) == [
        ("HumanMessage", "a"),
        ("AIMessage", "m"),
    ]


def test_map_keeps_every_field_and_does_not_share_kwargs() -> None:
    """A converted message keeps content, kwargs, metadata, name and id; kwargs are copied."""
    original = HumanMessage(
        content="hello",
        additional_kwargs={"sender": "Me", "is_from_me": True, "guid": "g"},
        response_metadata={"source": "chat.db"},
        name="Me",
        id="m-1",
    )
    session = ChatSession(messages=[original], functions=[{"name": "f"}])
    mapped = map_ai_messages_in_session(session, OWNER_SENDER)
    (converted,) = mapped["messages"]
    assert isinstance(converted, AIMessage)
    assert (converted.content, converted.name, converted.id) == ("hello", "Me", "m-1")
    assert converted.additional_kwargs == original.additional_kwargs
    assert converted.additional_kwargs is not original.additional_kwargs
    assert converted.response_metadata == {"source": "chat.db"}
    assert mapped["functions"] == [{"name": "f"}]
    assert isinstance(original, HumanMessage)


def test_map_passes_system_messages_through() -> None:
    """Message classes other than human and AI are left as they are."""
    system = SystemMessage(content="be brief")
    session = ChatSession(messages=[system, msg("x", "Me", me=True)])
    assert map_ai_messages_in_session(session, OWNER_SENDER)["messages"][0] is system


def test_map_ai_messages_maps_each_session() -> None:
    """map_ai_messages yields one mapped session per input session."""
    sessions = [
        ChatSession(messages=[msg("a", "Me", me=True)]),
        ChatSession(messages=[msg("b", "X")]),
    ]
    assert [contents(s) for s in map_ai_messages(sessions, OWNER_SENDER)] == [
        [("AIMessage", "a")],
        [("HumanMessage", "b")],
    ]


# --- convert_messages_for_finetuning --------------------------------------------------------


def test_convert_roles_like_langchain() -> None:
    """Each message class becomes the OpenAI dict LangChain's convert_message_to_dict gives."""
    session = ChatSession(
        messages=[
            SystemMessage(content="sys"),
            HumanMessage(content="q"),
            AIMessage(content="a"),
            ChatMessage(role="developer", content="d"),
            AIMessage(
                content="", additional_kwargs={"function_call": {"name": "f", "arguments": "{}"}}
            ),
            FunctionMessage(name="f", content="r"),
            AIMessage(content="", additional_kwargs={"tool_calls": [{"id": "c1"}]}),
            ToolMessage(content="t", tool_call_id="c1"),
        ]
    )
    assert convert_messages_for_finetuning([session]) == [
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
            {"role": "developer", "content": "d"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": "{}"},
            },
            {"role": "function", "content": "r", "name": "f"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "content": "t", "tool_call_id": "c1"},
        ]
    ]


def test_convert_drops_sessions_without_an_assistant_message() -> None:
    """Sessions with no AIMessage are dropped, the others keep their order."""
    sessions = [
        ChatSession(messages=[HumanMessage(content="1"), AIMessage(content="r1")]),
        ChatSession(messages=[HumanMessage(content="only human")]),
        ChatSession(messages=[AIMessage(content="r3")]),
    ]
    assert convert_messages_for_finetuning(sessions) == [
        [{"role": "user", "content": "1"}, {"role": "assistant", "content": "r1"}],
        [{"role": "assistant", "content": "r3"}],
    ]


def test_convert_name_from_kwargs_or_the_message_field() -> None:
    """`name` comes from additional_kwargs (LangChain) or else the message's own name field."""
    session = ChatSession(
        messages=[
            HumanMessage(content="a", name="Alice"),
            HumanMessage(content="b", name="ignored", additional_kwargs={"name": "Bob"}),
            AIMessage(content="c"),
        ]
    )
    assert convert_messages_for_finetuning([session]) == [
        [
            {"role": "user", "content": "a", "name": "Alice"},
            {"role": "user", "content": "b", "name": "Bob"},
            {"role": "assistant", "content": "c"},
        ]
    ]


class OddMessage(BaseMessage):
    """A message class with no OpenAI role."""

    type: str = "odd"


def test_convert_rejects_unknown_classes_only_in_kept_sessions() -> None:
    """An unknown class raises in a kept session; a dropped session is not converted at all."""
    dropped = ChatSession(messages=[OddMessage(content="x")])
    assert convert_messages_for_finetuning([dropped]) == []
    kept = ChatSession(messages=[OddMessage(content="x"), AIMessage(content="y")])
    with pytest.raises(ChatSessionError, match="OddMessage"):
        convert_messages_for_finetuning([kept])


def test_documented_chain_gives_the_owners_voice() -> None:
    """Merging, mapping to the owner and converting gives the owner's replies as assistant turns."""
    session = ChatSession(
        messages=[
            msg("dinner?", "Alice", T0),
            msg("at 8", "Alice", T0 + 5),
            msg("sure", "Me", T0 + 30, me=True),
            msg("see you", "Me", T0 + 35, me=True),
        ]
    )
    no_reply = ChatSession(messages=[msg("ping", "Bob", T0)])
    merged = merge_chat_runs([session, no_reply])
    assert convert_messages_for_finetuning(map_ai_messages(merged, OWNER_SENDER)) == [
        [
            {"role": "user", "content": "dinner?\n\nat 8"},
            {"role": "assistant", "content": "sure\n\nsee you"},
        ]
    ]


# --- split_on_idle_gap -----------------------------------------------------------------------


def times(parts: list[list[BaseMessage]]) -> list[list[int]]:
    """message_time offsets from T0 of each part."""
    return [[m.additional_kwargs["message_time"] - T0 for m in part] for part in parts]


def test_split_on_gaps_longer_than_the_threshold() -> None:
    """A silence longer than gap_seconds starts a new part; exactly gap_seconds does not."""
    messages = [msg(str(t), "A", T0 + t) for t in (0, 100, 200, 501, 601)]
    assert times(split_on_idle_gap(messages, 300)) == [[0, 100, 200], [501, 601]]
    assert times(split_on_idle_gap(messages, 301)) == [[0, 100, 200, 501, 601]]


def test_split_measures_from_the_end_of_a_merged_run() -> None:
    """After merging, the silence is measured from the run's last message, not its first."""
    run = ChatSession(
        messages=[msg("a", "A", T0), msg("b", "A", T0 + 1000), msg("c", "B", T0 + 1100)]
    )
    merged = merge_chat_runs_in_session(run)["messages"]
    assert times(split_on_idle_gap(merged, 300)) == [[0, 1100]]


def test_split_tolerates_slightly_out_of_order_times() -> None:
    """A message stamped before its predecessor does not make the next one look idle."""
    messages = [msg("a", "A", T0 + 1000), msg("b", "B", T0 + 990), msg("c", "A", T0 + 1250)]
    assert times(split_on_idle_gap(messages, 300)) == [[1000, 990, 1250]]


def test_split_edge_cases() -> None:
    """No messages give no parts; a non-positive gap or a missing time is an error."""
    assert split_on_idle_gap([], 60) == []
    with pytest.raises(ChatSessionError, match="positive"):
        split_on_idle_gap([msg("a", "A")], 0)
    with pytest.raises(ChatSessionError, match="message_time"):
        split_on_idle_gap([HumanMessage(content="a", additional_kwargs={"guid": "g"})], 60)
    with pytest.raises(ChatSessionError, match="message_time"):
        split_on_idle_gap([msg("a", "A", message_time=True)], 60)


# --- window ----------------------------------------------------------------------------------


def convo(pattern: str, sizes: list[int] | None = None) -> list[BaseMessage]:
    """Messages from a pattern like "HAHA" (H human, A assistant); content = token count in x's."""
    sizes = sizes or [1] * len(pattern)
    return [
        (AIMessage if kind == "A" else HumanMessage)(
            content="x" * size, additional_kwargs={"message_time": i}
        )
        for i, (kind, size) in enumerate(zip(pattern, sizes, strict=True))
    ]


def length(message: BaseMessage) -> int:
    """Token counter for tests: one token per character."""
    return len(str(message.content))


def indices(windows: list[list[BaseMessage]]) -> list[list[int]]:
    """Position of each windowed message in its conversation."""
    return [[m.additional_kwargs["message_time"] for m in w] for w in windows]


def test_window_overlaps_within_budget() -> None:
    """Windows fit the budget, end on a reply and share `overlap_messages` messages."""
    messages = convo("HAHAHAHAHA")
    assert indices(window(messages, 4, 2, length)) == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
    ]
    assert indices(window(messages, 4, 0, length)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_window_drops_trailing_human_messages() -> None:
    """Human messages after a window's last reply are cut; no reply at all gives no window."""
    assert indices(window(convo("HAHHH"), 100, 1, length)) == [[0, 1]]
    assert window(convo("HHH"), 100, 1, length) == []
    assert window([], 100, 1, length) == []


def test_window_leaves_out_oversized_messages() -> None:
    """A message over the budget is in no window and no window spans it."""
    messages = convo("HAHAHA", [1, 1, 1, 9, 1, 1])
    assert indices(window(messages, 4, 2, length)) == [[0, 1], [4, 5]]
    messages = convo("HAHHAHA", [1, 1, 1, 9, 1, 1, 1])
    assert indices(window(messages, 4, 2, length)) == [[0, 1], [4, 5, 6]]


def test_window_overlap_never_repeats_a_start() -> None:
    """When the previous window is shorter than the overlap, the next still starts later."""
    assert indices(window(convo("AAA", [2, 2, 2]), 2, 5, length)) == [[0], [1], [2]]


def test_window_invariants_on_random_conversations() -> None:
    """Seeded random conversations: every window is valid and every fitting reply is covered."""
    rng = random.Random(20240501)
    for _ in range(300):
        n = rng.randint(0, 40)
        messages = convo(
            "".join(rng.choice("HHA") for _ in range(n)), [rng.randint(0, 12) for _ in range(n)]
        )
        budget, overlap = rng.randint(1, 30), rng.randint(0, 4)
        windows = indices(window(messages, budget, overlap, length))
        for w in windows:
            assert w == list(range(w[0], w[-1] + 1))
            assert sum(length(messages[i]) for i in w) <= budget
            assert isinstance(messages[w[-1]], AIMessage)
        for previous, current in pairwise(windows):
            assert previous[0] < current[0]
            assert previous[-1] < current[-1]
            assert len(set(previous) & set(current)) <= overlap
        covered = {i for w in windows for i in w}
        fitting_replies = {
            i for i, m in enumerate(messages) if isinstance(m, AIMessage) and length(m) <= budget
        }
        assert fitting_replies <= covered


def test_window_counts_tokens_once_per_message() -> None:
    """count_tokens is called exactly once per message, also on a long conversation."""
    messages = convo("HA" * 10_000)
    calls = Counter[int]()

    def counting(message: BaseMessage) -> int:
        calls[id(message)] += 1
        return 1

    windows = window(messages, 50, 10, counting)
    assert len(calls) == len(messages) and set(calls.values()) == {1}
    assert len(windows) == 500 and windows[-1][-1] is messages[-1]


def test_window_rejects_bad_parameters() -> None:
    """Non-positive budgets, negative overlaps and negative token counts are errors."""
    with pytest.raises(ChatSessionError, match="budget"):
        window(convo("HA"), 0, 1, length)
    with pytest.raises(ChatSessionError, match="overlap"):
        window(convo("HA"), 10, -1, length)
    with pytest.raises(ChatSessionError, match="negative"):
        window(convo("HA"), 10, 1, lambda m: -1)


# --- the pipeline's steps on sessions -----------------------------------------------------------


def test_merge_keeps_the_owner_and_a_contact_apart_under_one_sender() -> None:
    """LangChain's loader names the owner's messages by the chat's handle: is_from_me splits
    the run it would have merged."""
    session = ChatSession(
        messages=[msg("hi", "+1555", T0), msg("hello", "+1555", T0 + 1, me=True), msg("bye", "+1555", T0 + 2, me=True)]
    )
    assert contents(merge_chat_runs_in_session(session)) == [
        ("HumanMessage", "hi"),
        ("HumanMessage", "hello\n\nbye"),
    ]


def test_map_with_the_pipelines_rule() -> None:
    """exact=False: "me" is the owner and names match without case, as [dataset] ai_sender."""
    session = ChatSession(messages=[msg("a", "Alice", T0), msg("m", "Me", T0 + 1, me=True)])
    assert contents(map_ai_messages_in_session(session, "me", exact=False)) == [
        ("HumanMessage", "a"),
        ("AIMessage", "m"),
    ]
    assert contents(map_ai_messages_in_session(session, "ALICE", exact=False))[0] == ("AIMessage", "a")
    assert contents(map_ai_messages_in_session(session, "me"))[1] == ("HumanMessage", "m")


def test_convert_puts_the_system_prompt_first() -> None:
    """system_prompt opens every kept list, as the dataset stage's lines."""
    session = ChatSession(messages=[HumanMessage(content="q"), AIMessage(content="a")])
    assert convert_messages_for_finetuning([session], system_prompt="be brief") == [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    ]


def chat_session(chat_id: int, *messages: BaseMessage, group: bool = False) -> IMessageChatSession:
    info = {"chat_id": chat_id, "is_group": group, "participants": []}
    return IMessageChatSession(messages=list(messages), chat=info)


def test_split_sessions_keeps_the_chat() -> None:
    """Each conversation of a session is a session of its own, with the chat it comes from."""
    parts = list(split_on_idle_gaps([chat_session(7, msg("a", "A", T0), msg("b", "A", T0 + 999))], 300))
    assert [contents(p) for p in parts] == [[("HumanMessage", "a")], [("HumanMessage", "b")]]
    assert all(p["chat"]["chat_id"] == 7 for p in parts)


def test_prepare_names_group_senders_drops_what_teaches_nothing_and_windows() -> None:
    """Group senders get OpenAI names, conversations without a reply go, groups go when
    excluded, and windows end on a reply within the budget."""
    group = chat_session(
        1,
        msg("hi all", "José", T0),
        msg("hey", "Me", T0 + 1, me=True, cls=AIMessage),
        msg("later", "José", T0 + 2),
        group=True,
    )
    silent = chat_session(2, msg("anyone?", "Bob", T0))
    counter = counter_for("gpt-4.1-mini-2025-04-14")
    [example] = prepare_for_finetuning([group, silent], DatasetConfig(), counter)
    assert [(m.name, m.content) for m in example["messages"]] == [("Jose", "hi all"), (None, "hey")]
    excluded = replace(DatasetConfig(), group_chats="exclude")
    assert list(prepare_for_finetuning([group], excluded, counter)) == []


def test_hold_out_by_chat() -> None:
    """Every example of a chat goes to the same side; no share holds nothing out."""
    examples = [chat_session(chat_id % 20, msg("x", "A")) for chat_id in range(200)]
    train, validation = hold_out(examples, 0.3, 7)
    sides: dict[int, str] = {}
    for side, sessions in (("train", train), ("validation", validation)):
        for session in sessions:
            assert sides.setdefault(session["chat"]["chat_id"], side) == side
    assert train and validation and len(train) + len(validation) == 200
    assert hold_out(examples, 0.0, 7) == (examples, [])
