"""Conversations in the base model's own chat format, with the loss on the replies only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers", reason="the local backend's extra is not installed: pip install -e '.[local]'")

from imessage_finetune.backends.examples import IGNORE, ExampleBuilder  # noqa: E402
from imessage_finetune.backends.local.tiny_model import build_demo_model  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_demo_model(tmp_path_factory.mktemp("tiny") / "model"))


def trained_text(tokenizer: Any, example: Any) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])


def line(*messages: tuple[str, str] | tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"messages": [{"role": m[0], "content": m[1], **(m[2] if len(m) > 2 else {})} for m in messages]}


def test_the_loss_covers_each_reply_and_its_end_of_turn_and_nothing_else(tokenizer: Any) -> None:
    builder = ExampleBuilder(tokenizer, 1024)
    [example] = builder.build(
        [line(("system", "be brief"), ("user", "hi"), ("assistant", "hello"), ("user", "ok?"), ("assistant", "sure"))]
    )
    assert trained_text(tokenizer, example) == "hello<|im_end|>sure<|im_end|>"
    assert tokenizer.decode(list(example.input_ids)).startswith("<|im_start|>system\nbe brief<|im_end|>")
    assert builder.stats.trained_tokens == example.trained_tokens == len("hello") + len("sure") + 2


def test_names_become_prefixes_and_one_sender_side_is_one_turn(tokenizer: Any) -> None:
    """Chat templates drop OpenAI's `name`; strict templates need alternating roles."""
    builder = ExampleBuilder(tokenizer, 1024)
    [example] = builder.build(
        [line(("user", "hi", {"name": "Achilles"}), ("user", "hey", {"name": "Crab"}), ("assistant", "both of you"))]
    )
    text = tokenizer.decode(list(example.input_ids))
    assert "<|im_start|>user\nAchilles: hi\nCrab: hey<|im_end|>" in text
    assert builder.stats.changed == {"sender_name_as_prefix": 2, "same_role_messages_joined": 1}


def test_text_that_spells_a_special_token_is_neutralised(tokenizer: Any) -> None:
    """A message containing "<|im_end|>" must not end the turn in the model's eyes."""
    builder = ExampleBuilder(tokenizer, 1024)
    [example] = builder.build([line(("user", "type <|im_end|> now"), ("assistant", "no"))])
    assert example.input_ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2
    assert builder.stats.changed == {"special_token_neutralised": 1}


def test_a_conversation_that_opens_with_a_reply_trains_the_reply_not_its_header(tokenizer: Any) -> None:
    builder = ExampleBuilder(tokenizer, 1024)
    [example] = builder.build([line(("assistant", "morning!"), ("user", "hi"), ("assistant", "coffee?"))])
    assert trained_text(tokenizer, example) == "morning!<|im_end|>coffee?<|im_end|>"


def test_a_sender_name_that_spells_a_special_token_is_neutralised_too(tokenizer: Any) -> None:
    builder = ExampleBuilder(tokenizer, 1024)
    [example] = builder.build([line(("user", "hi", {"name": "Eve<|im_end|>"}), ("assistant", "no"))])
    assert example.input_ids.count(tokenizer.convert_tokens_to_ids("<|im_end|>")) == 2


def test_a_reply_with_weight_0_is_context_not_target(tokenizer: Any) -> None:
    builder = ExampleBuilder(tokenizer, 1024)
    [example] = builder.build([line(("user", "a"), ("assistant", "old", {"weight": 0}), ("user", "b"), ("assistant", "new"))])
    assert trained_text(tokenizer, example) == "new<|im_end|>"
    assert builder.build([line(("user", "a"), ("assistant", "x", {"weight": 0}))]) == []
    assert builder.stats.dropped == {"no_trained_reply": 1}


def test_a_long_conversation_is_split_after_replies_and_an_exchange_too_long_alone_is_dropped(tokenizer: Any) -> None:
    turns = [("system", "s")]
    for i in range(6):
        turns += [("user", f"question {i} " + "x" * 20), ("assistant", f"answer {i}")]
    turns[5] = ("user", "y" * 300)  # the third exchange can never fit
    builder = ExampleBuilder(tokenizer, 120)
    examples = builder.build([line(*turns)])
    assert all(len(e.input_ids) <= 120 for e in examples)
    answers = [trained_text(tokenizer, e) for e in examples]
    assert "".join(answers).count("answer") == 5 and "answer 2" not in "".join(answers)
    assert all(tokenizer.decode(list(e.input_ids)).startswith("<|im_start|>system\ns<|im_end|>") for e in examples)
    assert builder.stats.dropped == {"exchanges_longer_than_max_seq_length": 1}
    assert builder.stats.changed == {"conversations_split_to_fit_max_seq_length": 1}


def test_a_template_that_rewrites_past_replies_leaves_them_untrained(tokenizer: Any) -> None:
    """Like templates that strip reasoning from earlier replies: only the last reply's span is
    the same in every rendering, so only it is trained."""
    original = tokenizer.chat_template
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' and not loop.last %}(earlier){% else %}{{ m.content }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    try:
        builder = ExampleBuilder(tokenizer, 1024)
        [example] = builder.build([line(("user", "a"), ("assistant", "one"), ("user", "b"), ("assistant", "two"))])
    finally:
        tokenizer.chat_template = original
    assert trained_text(tokenizer, example) == "two<|im_end|>"
    assert builder.stats.changed == {"replies_untrained_template_rewrites_history": 1}


def test_a_conversation_the_template_refuses_is_dropped_with_its_reason(tokenizer: Any) -> None:
    original = tokenizer.chat_template
    tokenizer.chat_template = (
        "{% if messages[0].role == 'assistant' %}{{ raise_exception('Conversations must start with the user') }}"
        "{% endif %}" + original
    )
    try:
        builder = ExampleBuilder(tokenizer, 1024)
        examples = builder.build([line(("assistant", "hi")), line(("user", "a"), ("assistant", "b"))])
    finally:
        tokenizer.chat_template = original
    assert len(examples) == 1
    assert builder.stats.dropped == {"rejected_by_chat_template": 1}


def test_the_demo_model_is_built_byte_for_byte_the_same(tmp_path: Path) -> None:
    first, second = build_demo_model(tmp_path / "a"), build_demo_model(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert "model.safetensors" in names and names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
