"""Generation in the local backend as the interface says: settings, stop strings, usage,
close(), a reply begun, and a conversation longer than the model's context."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")

from imessage_finetune.backends.interface import GenerationSettings
from imessage_finetune.backends.local.chat import _partial_stop
from imessage_finetune.errors import ContextLengthExceeded

HI = [{"role": "user", "content": "hi there"}]  # greedy, the demo model repeats itself here
GREEDY = GenerationSettings(max_tokens=20, temperature=0)


@pytest.fixture(scope="module")
def chat(trained_demo: Path) -> Any:
    from imessage_finetune.backends.local.chat import LocalChat
    from imessage_finetune.config import load_config

    config = load_config(trained_demo)
    model = json.loads((config.artifacts_dir / "model.json").read_text())
    return LocalChat(model, config.artifacts_dir, config.base_dir, config.finetune.local)


def test_the_end_of_a_reply_that_may_begin_a_stop_string_is_held_back() -> None:
    assert _partial_stop("see you at 8p", ("8pm", "bye")) == 2
    assert _partial_stop("see you", ("8pm",)) == 0
    assert _partial_stop("ab", ("abc", "bcd")) == 2


def test_a_reply_runs_to_max_tokens_or_to_a_stop_string_cut_before_it(chat: Any) -> None:
    whole = chat.stream(HI, GREEDY)
    text = "".join(whole)
    assert whole.usage.finish_reason == "length" and whole.usage.completion_tokens == 20
    assert whole.usage.prompt_tokens == chat.count_tokens(HI)
    stop = text.strip()[:2] if len(text.strip()) >= 2 else text.strip()
    cut = chat.stream(HI, GenerationSettings(max_tokens=20, temperature=0, stop=(stop,)))
    pieces = list(cut)
    assert "".join(pieces) == text[: text.index(stop)] and not any(stop in p for p in pieces)
    assert cut.usage.finish_reason == "stop" and cut.usage.completion_tokens < 20


def test_close_stops_the_generation_at_the_next_token(chat: Any) -> None:
    completion = chat.stream(HI, GenerationSettings(max_tokens=2000, temperature=0))
    next(completion)
    completion.close()
    list(completion)
    assert completion.usage.completion_tokens < 2000


def test_a_final_assistant_message_is_a_reply_begun_and_is_continued(chat: Any) -> None:
    begun = [*HI, {"role": "assistant", "content": "hel"}]
    text = chat.tokenizer.decode(chat._encode(begun)["input_ids"][0])
    assert text.endswith("<|im_start|>assistant\nhel")
    completion = chat.stream(begun, GREEDY)
    assert "".join(completion) and completion.usage.prompt_tokens == len(chat._encode(begun)["input_ids"][0])


def test_a_conversation_longer_than_the_context_is_refused_before_generating(chat: Any) -> None:
    with pytest.raises(ContextLengthExceeded, match=r"reads at most 4096: send fewer or shorter messages"):
        chat.stream([{"role": "user", "content": "x" * 5000}], GREEDY)
