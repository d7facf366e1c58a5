"""The shaping rules (imessage_finetune.shaping): one implementation for the stages and the
LangChain-compatible functions, with LangChain's documented behaviour as a parameter."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest

from imessage_finetune.config import DatasetConfig
from imessage_finetune.errors import ChatSessionError, DatasetError
from imessage_finetune.shaping import (
    OWNER_SENDER,
    Shaper,
    ai_matcher,
    in_validation,
    join_run,
    openai_example,
    openai_message,
    openai_name,
    run_kwargs,
    runs,
    speaker,
)
from imessage_finetune.tokens import counter_for

COUNTER = counter_for("gpt-4.1-mini-2025-04-14")


def kw(sender: str | None, me: bool = False, handle: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"sender": sender, "is_from_me": me, "handle": handle, **extra}


# --- voice -------------------------------------------------------------------------------------


def test_the_pipelines_voice_is_loose_and_langchains_exact() -> None:
    """ai_sender compares names and handles without case, "me" is the owner; LangChain's rule
    compares `sender` exactly and only OWNER_SENDER is the owner."""
    owner, namesake = kw("Me", me=True), kw("me", handle="+15555550101")
    tortoise = kw("Tortoise", handle="+15555550102")
    assert ai_matcher("ME")(owner) and not ai_matcher("me")(namesake)
    assert ai_matcher("tortoise")(tortoise) and ai_matcher("+15555550102")(tortoise)
    assert ai_matcher("me", exact=True)(namesake) and not ai_matcher("me", exact=True)(owner)
    assert ai_matcher(OWNER_SENDER, exact=True)(owner)
    assert not ai_matcher("tortoise", exact=True)(tortoise) and ai_matcher("Tortoise", exact=True)(tortoise)


# --- runs --------------------------------------------------------------------------------------


def test_a_run_is_one_kind_one_sender_one_direction() -> None:
    """Same kind, same non-null sender and same is_from_me continue a run; no sender never does."""
    items = [
        ("human", kw("A")),
        ("human", kw("A")),
        ("human", kw("A", me=True)),  # the owner under a contact's handle (LangChain's loader)
        ("ai", kw("A", me=True)),
        ("human", kw(None)),
        ("human", kw(None)),
    ]
    grouped = [len(run) for run in runs(items, lambda item: speaker(*item))]
    assert grouped == [2, 1, 1, 1, 1]
    assert list(runs([], lambda item: None)) == []


def test_a_runs_text_and_record() -> None:
    """Texts joined once, blanks left out, ends stripped; a lone text untouched. The record
    keeps the chosen keys of the first message, in merged.json's order, then the run's end and
    guids (those of merged messages included)."""
    assert join_run([" lone "], "\n\n") == " lone "
    assert join_run([" a", "  ", "b "], " | ") == "a | b"
    first = kw("A", guid="g1", message_time=1, message_time_iso="t1", service="SMS")
    merged_before = kw(
        "A", guid="g2", guids=["g2", "g3"], message_time=2, last_message_time=3, last_message_time_iso="t3"
    )
    record = run_kwargs([first, merged_before], ("sender", "is_from_me", "message_time"))
    assert list(record) == [
        "sender",
        "is_from_me",
        "message_time",
        "last_message_time",
        "guids",
        "last_message_time_iso",
    ]
    assert record["guids"] == ["g1", "g2", "g3"] and record["last_message_time"] == 3
    assert run_kwargs([first])["service"] == "SMS"


# --- lines -------------------------------------------------------------------------------------


def test_openai_messages_and_lines() -> None:
    """Roles by kind, name only when given, calls with null content, system prompt first."""
    assert openai_message("human", "hi", name="Bob") == {"role": "user", "content": "hi", "name": "Bob"}
    assert openai_message("ai", "", kwargs={"tool_calls": []}) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [],
    }
    assert openai_message("chat", "x", role="developer") == {"role": "developer", "content": "x"}
    with pytest.raises(ChatSessionError, match="odd"):
        openai_message("odd", "x")
    line = openai_example([{"role": "assistant", "content": "a"}], "be brief")
    assert line == {"messages": [{"role": "system", "content": "be brief"}, {"role": "assistant", "content": "a"}]}
    assert openai_example([], "") == {"messages": []}


def test_group_names_stay_distinct_and_valid_for_openai() -> None:
    """Accents dropped, other scripts given a stable label: two speakers never collapse."""
    assert openai_name("José García") == "Jose_Garcia"
    assert openai_name("张伟") != openai_name("李娜")
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", openai_name(n)) for n in ("张伟", "Zoë", "a b", "x" * 99))


def test_held_out_chats_are_a_seeded_share() -> None:
    """No share holds nothing out; a share holds out about that share of chats, by seed."""
    assert not any(in_validation(chat, 0.0, 1) for chat in range(100))
    held = sum(in_validation(chat, 0.3, 7) for chat in range(1000))
    assert 250 < held < 350
    assert [in_validation(c, 0.3, 7) for c in range(50)] != [in_validation(c, 0.3, 8) for c in range(50)]


# --- shaper ------------------------------------------------------------------------------------


def message(text: str, sender: str, t: int, *, me: bool = False, handle: str | None = None) -> dict[str, Any]:
    """A sessions.json message."""
    kwargs = {
        "message_time": t,
        "message_time_iso": f"t{t}",
        "sender": sender,
        "is_from_me": me,
        "guid": f"g{t}",
        "handle": handle,
    }
    return {"type": "human", "data": {"content": text, "additional_kwargs": kwargs, "name": None}}


def chat(*messages: dict[str, Any], group: bool = True, handles: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "is_group": group,
        "participants": [{"handle": h, "name": None} for h in handles],
        "messages": list(messages),
    }


def test_group_senders_hidden_by_redaction_get_stable_labels() -> None:
    """Across the conversations of one chat, a sender whose name redaction hides is the same
    "Person N"; a named sender keeps their name."""
    shaper = Shaper(replace(DatasetConfig(), redact_phones=True, idle_gap_hours=1.0), COUNTER)
    session = chat(
        message("hi", "+15555550101", 0, handle="+15555550101"),
        message("hey", "Crab", 10),
        message("yo", "Me", 20, me=True),
        message("later", "+15555550101", 9000, handle="+15555550101"),
        message("ok", "Me", 9010, me=True),
        handles=("+15555550101",),
    )
    examples = list(shaper.shape_chat(session))
    names = [[turn.name for turn in example] for example in examples]
    assert names == [["Person_1", "Crab", None], ["Person_1", None]]


def test_the_budget_leaves_room_for_the_system_prompt() -> None:
    """A budget the system prompt fills is an error that names both settings."""
    with pytest.raises(DatasetError, match="dataset.max_tokens .* dataset.system_prompt"):
        Shaper(replace(DatasetConfig(), max_tokens=10, system_prompt="word " * 20), COUNTER)
