"""train.jsonl validator: OpenAI's rules, one crafted file per rule, schema agreement, privacy."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from imessage_finetune import openai_file
from imessage_finetune.tokens import counter_for
from imessage_finetune.openai_file import (
    SPECIAL_TOKENS,
    Problem,
    ValidationResult,
    validate_file,
    validate_lines,
)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "train_line.schema.json"
# Every chat text in these tests carries this marker, so a leak into a problem is detectable.
SECRET = "SECRET"
SYSTEM = {"role": "system", "content": f"{SECRET} you are Sam"}
USER = {"role": "user", "content": f"{SECRET} are you coming?"}
ASSISTANT = {"role": "assistant", "content": f"{SECRET} on my way"}


def example(number: int) -> dict[str, Any]:
    """A valid example, distinct per number so that the valid file has no duplicates."""
    return {
        "messages": [
            SYSTEM,
            {"role": "user", "content": f"{SECRET} question {number}"},
            {"role": "assistant", "content": f"{SECRET} answer {number}"},
        ]
    }


def valid_lines(count: int = 10) -> list[str]:
    return [json.dumps(example(n)) for n in range(count)]


def line(*messages: object, **top: object) -> str:
    return json.dumps({"messages": list(messages), **top})


def findings(result: ValidationResult) -> list[tuple[int, str, str, str]]:
    return [(p.line, p.field, p.code, p.severity) for p in result.problems]


def with_line_4(text: str) -> ValidationResult:
    lines = valid_lines()
    lines[3] = text
    return validate_lines(lines, name="train.jsonl")


# (id, line 4 of an otherwise valid file, expected field, code, severity)
RULE_CASES: list[tuple[str, str, str, str, str]] = [
    ("invalid_json", '{"messages": [', "", "invalid_json", "error"),
    ("nan_is_not_json", '{"messages": NaN}', "", "invalid_json", "error"),
    ("not_object", json.dumps([SECRET]), "", "not_object", "error"),
    ("missing_messages", json.dumps({}), "messages", "missing_messages", "error"),
    ("empty_messages", line(), "messages", "empty_messages", "error"),
    ("messages_not_list", json.dumps({"messages": USER}), "messages", "messages_not_list", "error"),
    ("unknown_key", line(USER, ASSISTANT, metadata={"a": 1}), "metadata", "unknown_key", "error"),
    ("invalid_tools", line(USER, ASSISTANT, tools=[SECRET]), "tools", "invalid_tools", "error"),
    (
        "message_not_object",
        line(USER, SECRET, ASSISTANT),
        "messages[1]",
        "message_not_object",
        "error",
    ),
    (
        "unknown_message_key",
        line(USER, {**ASSISTANT, "refusal": None}),
        "messages[1].refusal",
        "unknown_message_key",
        "error",
    ),
    (
        "missing_role",
        line(USER, {"content": SECRET}, ASSISTANT),
        "messages[1].role",
        "missing_role",
        "error",
    ),
    (
        "unknown_role",
        line(USER, {"role": "bot", "content": SECRET}, ASSISTANT),
        "messages[1].role",
        "unknown_role",
        "error",
    ),
    (
        "tool_role_unsupported",
        line(USER, {"role": "tool", "content": SECRET}, ASSISTANT),
        "messages[1].role",
        "unknown_role",
        "error",
    ),
    (
        "system_not_first",
        line(USER, SYSTEM, ASSISTANT),
        "messages[1].role",
        "system_not_first",
        "error",
    ),
    (
        "missing_content",
        line(USER, {"role": "assistant"}),
        "messages[1].content",
        "missing_content",
        "error",
    ),
    (
        "content_not_string",
        line(USER, {"role": "assistant", "content": [SECRET]}),
        "messages[1].content",
        "content_not_string",
        "error",
    ),
    (
        "empty_content",
        line({"role": "user", "content": ""}, ASSISTANT),
        "messages[0].content",
        "empty_content",
        "error",
    ),
    (
        "invalid_name",
        line({**USER, "name": 7}, ASSISTANT),
        "messages[0].name",
        "invalid_name",
        "error",
    ),
    *[
        (
            f"invalid_weight_{json.dumps(weight)}",
            line(USER, {**ASSISTANT, "weight": weight}),
            "messages[1].weight",
            "invalid_weight",
            "error",
        )
        for weight in (2, True, False, 0.5, "1", None)
    ],
    (
        "weight_on_user",
        line({**USER, "weight": 1}, ASSISTANT),
        "messages[0].weight",
        "weight_on_non_assistant",
        "error",
    ),
    (
        "weight_on_system",
        line({**SYSTEM, "weight": 0}, USER, ASSISTANT),
        "messages[0].weight",
        "weight_on_non_assistant",
        "error",
    ),
    (
        "only_weight_0_assistants",
        line(USER, {**ASSISTANT, "weight": 0}),
        "messages",
        "no_trainable_assistant",
        "error",
    ),
    *[
        (
            f"special_token_{token}",
            line(USER, {"role": "assistant", "content": f"{SECRET} {token} {SECRET}"}),
            "messages[1].content",
            "special_token",
            "error",
        )
        for token in SPECIAL_TOKENS
    ],
    (
        "last_not_assistant",
        line(USER, ASSISTANT, {"role": "user", "content": SECRET}),
        "messages[2].role",
        "last_not_assistant",
        "warning",
    ),
    ("no_user_message", line(SYSTEM, ASSISTANT), "messages", "no_user_message", "warning"),
]

# Lines the rules must accept without any problem, including the edge values the schema also allows.
ACCEPTED_LINES = [
    ("weight_1", line(USER, {**ASSISTANT, "weight": 1})),
    ("weight_1.0", line(USER, {**ASSISTANT, "weight": 1.0})),
    ("weight_0_then_trained", line(USER, {**ASSISTANT, "weight": 0}, USER, ASSISTANT)),
    ("named_sender", line({**USER, "name": "Alex"}, ASSISTANT)),
    (
        "tools_listed",
        line(USER, ASSISTANT, tools=[{"type": "function", "function": {"name": "f"}}]),
    ),
    ("no_system_message", line(USER, ASSISTANT)),
    (
        "angle_brackets_not_special",
        line(USER, {"role": "assistant", "content": "<|hi|> <endoftext>"}),
    ),
]


def test_valid_file_has_no_problems() -> None:
    """Ten well-formed examples pass with no errors and no warnings."""
    result = validate_lines(valid_lines(), name="train.jsonl")
    assert result.problems == ()
    assert result.ok
    assert result.examples == 10
    assert (result.path, result.counter_encoding, result.exact_tokens) == (
        "train.jsonl",
        "o200k_base",
        True,
    )


@pytest.mark.parametrize(
    ("text", "field", "code", "severity"),
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_each_rule_reports_exactly_its_problem(
    text: str, field: str, code: str, severity: str
) -> None:
    """A file breaking one rule on line 4 yields exactly that code at that line and field."""
    result = with_line_4(text)
    assert findings(result) == [(4, field, code, severity)]
    assert result.ok is (severity == "warning")


@pytest.mark.parametrize(
    "text", [case[1] for case in ACCEPTED_LINES], ids=[c[0] for c in ACCEPTED_LINES]
)
def test_allowed_variants_pass(text: str) -> None:
    """Weights 0/1 (1.0 too), names, tools and bracketed text that is not a special token pass."""
    assert findings(with_line_4(text)) == []


def test_problem_text_names_line_field_and_role() -> None:
    """str(Problem) reads 'file:line field: message' and quotes an identifier-like role."""
    result = with_line_4(line(USER, {"role": "bot", "content": SECRET}, ASSISTANT))
    assert [str(p) for p in result.problems] == [
        "train.jsonl:4 messages[1].role: unknown role 'bot' (use system, user or assistant)"
    ]


def test_file_level_problem_text_has_no_line() -> None:
    """Line 0 prints as 'file: message'; a line without field as 'file:line: message'."""
    assert (
        str(Problem(0, "", "too_few_examples", "only 3", "error", "t.jsonl")) == "t.jsonl: only 3"
    )
    assert str(Problem(7, "", "invalid_json", "bad", "error", "t.jsonl")) == "t.jsonl:7: bad"


def test_problems_never_quote_chat_text() -> None:
    """No problem from any rule contains message text, even in unknown roles or keys."""
    texts = [case[1] for case in RULE_CASES] + [
        line(USER, {"role": f"{SECRET} said hi", "content": "x"}, ASSISTANT),
        line(USER, {**ASSISTANT, f"{SECRET} as a key": 1}),
        json.dumps({"messages": [USER, ASSISTANT], f"{SECRET} top": 1}),
    ]
    for text in texts:
        result = with_line_4(text)
        assert result.problems
        for problem in result.problems:
            assert SECRET not in str(problem)


def test_non_identifier_keys_and_roles_are_described_not_quoted() -> None:
    """Keys and roles that could be text are named by length/kind only."""
    key = f"{SECRET} as a key"
    result = with_line_4(line(USER, {**ASSISTANT, key: 1}))
    assert findings(result) == [
        (4, f"messages[1].<key of {len(key)} characters>", "unknown_message_key", "error")
    ]
    result = with_line_4(line(USER, {"role": f"{SECRET} hi", "content": "x"}, ASSISTANT))
    assert result.problems[0].message == "unknown role (use system, user or assistant)"


def test_schema_is_valid_draft_2020_12() -> None:
    """The shipped line schema is itself a valid JSON Schema 2020-12 document."""
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


AGREEMENT_LINES = [
    (c[0], c[1]) for c in RULE_CASES if c[0] not in ("invalid_json", "nan_is_not_json")
]


@pytest.mark.parametrize(
    "text",
    [t for _, t in AGREEMENT_LINES + ACCEPTED_LINES],
    ids=[i for i, _ in AGREEMENT_LINES + ACCEPTED_LINES],
)
def test_schema_and_rules_agree(text: str) -> None:
    """The schema rejects a line exactly when the hand-written rules report an error on it."""
    schema = Draft202012Validator(json.loads(SCHEMA_PATH.read_text("utf-8")))
    rule_errors = [p for p in with_line_4(text).errors if p.line == 4 and p.code != "schema"]
    assert schema.is_valid(json.loads(text)) is (not rule_errors)


def test_schema_catches_what_rules_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line breaking the schema but no rule is an error with code 'schema' at the schema path."""
    stricter = Draft202012Validator({"properties": {"messages": {"maxItems": 2}}})
    monkeypatch.setattr(openai_file, "_line_schema", lambda: stricter)
    result = validate_lines(valid_lines())
    assert {(p.line, p.field, p.code) for p in result.problems} == {
        (n, "messages", "schema") for n in range(1, 11)
    }


def test_too_few_examples_is_a_file_level_error() -> None:
    """Nine examples give one error at line 0 with an empty field; min_examples moves the bar."""
    result = validate_lines(valid_lines(9), name="train.jsonl")
    assert findings(result) == [(0, "", "too_few_examples", "error")]
    assert (
        str(result.errors[0]) == "train.jsonl: the file has 9 example(s); OpenAI needs at least 10"
    )
    assert validate_lines(valid_lines(9), min_examples=9).ok


def test_duplicates_name_both_lines() -> None:
    """An exact repeat is a warning on the later line naming the first, whatever the key order."""
    lines = valid_lines()
    lines[5] = lines[1]
    reordered = {"messages": [dict(reversed(list(m.items()))) for m in example(2)["messages"]]}
    lines[7] = json.dumps(reordered, indent=1).replace("\n", " ")
    result = validate_lines(lines)
    assert findings(result) == [
        (6, "", "duplicate_example", "warning"),
        (8, "", "duplicate_example", "warning"),
    ]
    assert [p.message for p in result.problems] == [
        "same example as line 2",
        "same example as line 3",
    ]


def test_over_token_limit_is_a_warning() -> None:
    """An example above token_limit is warned about (OpenAI truncates it); no limit, no warning."""
    baseline = validate_lines(valid_lines())
    limit = max(baseline.tokens_per_example)
    long_line = line(USER, {"role": "assistant", "content": f"{SECRET} " + "word " * 50})
    lines = valid_lines()
    lines[3] = long_line
    result = validate_lines(lines, token_limit=limit)
    assert findings(result) == [(4, "messages", "over_token_limit", "warning")]
    assert f"over the limit of {limit}" in result.problems[0].message
    assert validate_lines(lines).problems == ()


def test_tokens_per_example_use_the_model_counter() -> None:
    """Each example's count is the counter's count of its messages; an unreadable line counts 0."""
    lines = valid_lines()
    lines[2] = "not json"
    result = validate_lines(lines, model="gpt-4o-mini-2024-07-18")
    counter = counter_for("gpt-4o-mini-2024-07-18")
    expected = [counter.count_example(json.loads(t)["messages"]) for t in valid_lines()]
    expected[2] = 0
    assert result.tokens_per_example == tuple(expected)


def test_unknown_model_reports_estimated_tokens() -> None:
    """With no exact tokenizer for the model the result says the counts are estimates."""
    result = validate_lines(valid_lines(), model="llama-3.1-8b", token_limit=5)
    assert (result.counter_encoding, result.exact_tokens) == ("estimate", False)
    assert "tokens (estimated)" in result.warnings[0].message


def test_blank_lines_inside_are_errors_at_the_end_warnings() -> None:
    """A blank line between examples is an error; blank lines after the last example only warn."""
    lines = valid_lines()
    lines.insert(3, "")
    lines += ["", "   \r\n"]
    result = validate_lines(lines)
    assert findings(result) == [
        (4, "", "blank_line", "error"),
        (12, "", "trailing_blank_line", "warning"),
        (13, "", "trailing_blank_line", "warning"),
    ]
    assert result.examples == 10


def test_byte_order_mark_is_a_warning_and_skipped() -> None:
    """A UTF-8 BOM before line 1 is warned about and does not break that line's JSON."""
    lines = valid_lines()
    lines[0] = "\ufeff" + lines[0]
    assert findings(validate_lines(lines)) == [(1, "", "bom", "warning")]


def test_validate_file_reads_crlf_and_flags_bad_utf8(tmp_path: Path) -> None:
    """Files may use CRLF endings; a line that is not UTF-8 is an error at its line."""
    path = tmp_path / "train.jsonl"
    raw = [t.encode("utf-8") for t in valid_lines()]
    path.write_bytes(b"\r\n".join(raw) + b"\r\n")
    clean = validate_file(path)
    assert (clean.problems, clean.examples, clean.path) == ((), 10, str(path))
    raw[3] = b'{"messages": "\xff"}'
    path.write_bytes(b"\n".join(raw) + b"\n")
    result = validate_file(path)
    assert findings(result) == [(4, "", "invalid_utf8", "error")]
    assert str(result.problems[0]).startswith(f"{path}:4: ")


def test_validate_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """Validating a multi-MB file never holds more than a small fraction of it in memory."""
    path = tmp_path / "big.jsonl"
    content = "lorem ipsum dolor sit amet " * 800  # ~21 KB per line
    with path.open("w", encoding="utf-8") as handle:
        for n in range(200):
            handle.write(line(USER, {"role": "assistant", "content": f"{n} {content}"}) + "\n")
    size = path.stat().st_size
    assert size > 4_000_000
    validate_file(path, model="llama-3.1-8b")  # warm caches (schema) outside the measurement
    tracemalloc.start()
    try:
        result = validate_file(path, model="llama-3.1-8b")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.examples == 200 and result.ok
    assert peak < size / 10  # a few lines at a time, never the file


def test_result_splits_errors_and_warnings() -> None:
    """errors/warnings partition the problems by severity; ok means no errors."""
    lines = valid_lines()
    lines[1] = line(SYSTEM, ASSISTANT)  # warning: no user
    lines[2] = line(USER, SYSTEM, ASSISTANT)  # error: system not first
    result = validate_lines(lines)
    assert [p.code for p in result.warnings] == ["no_user_message"]
    assert [p.code for p in result.errors] == ["system_not_first"]
    assert result.ok is False
