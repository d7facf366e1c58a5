"""Check an OpenAI chat fine-tuning JSONL file before upload, one line at a time.

OpenAI accepts most broken files at upload and fails the (queued, possibly paid-for) job later, so
every rule OpenAI is known to enforce is checked here first (notes: openai-finetuning.md §7-8).
Each problem names its line (1-based; 0 for the whole file) and a JSON-pointer-like field such as
`messages[3].weight` (message indices are 0-based, as in the JSON array).

Errors (OpenAI rejects the file): invalid_utf8, blank_line (inside the file), invalid_json,
not_object, missing_messages, empty_messages, messages_not_list, unknown_key, invalid_tools,
message_not_object, unknown_message_key, missing_role, unknown_role, system_not_first,
missing_content, content_not_string, empty_content, special_token, invalid_name, invalid_weight,
weight_on_non_assistant, no_trainable_assistant, too_few_examples (line 0), and schema (a line
breaks `schemas/train_line.schema.json` in a way the rules above did not catch; the two are kept
in agreement, so this means a bug here).

Warnings (OpenAI trains anyway, perhaps not as intended): bom, trailing_blank_line,
last_not_assistant, no_user_message, duplicate_example, over_token_limit (OpenAI truncates such an
example from the end).

Privacy: problems never quote chat content. They name line and field, and quote only values that
are labels, never text: a role or key that looks like an identifier, a special-token string.

Memory: the file is read line by line; what is kept per example is its token count and a 16-byte
digest for duplicate detection, so a 100 MB file is fine.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, NoReturn

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator

from imessage_finetune import artifacts
from imessage_finetune.config import FinetuneConfig
from imessage_finetune.schema_check import load_schema
from imessage_finetune.tokens import TokenCounter, counter_for

DEFAULT_MODEL = FinetuneConfig.model
ROLES = ("system", "user", "assistant")
TOP_LEVEL_KEYS = frozenset({"messages", "tools"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftext|>",
    "<|endofprompt|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
)
SCHEMA_FILE = artifacts.TRAIN.schema

Severity = Literal["error", "warning"]

SPECIAL_TOKEN_RE = re.compile("|".join(re.escape(token) for token in SPECIAL_TOKENS))
# Only identifier-like values are quoted back: a value that could be chat text never is.
_LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Problem:
    """One finding: where (line, field), what (code, message) and how bad (severity).

    `path` names the file in `str()` and is the `name`/`path` given to the validate functions.
    """

    line: int
    field: str
    code: str
    message: str
    severity: Severity
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where} {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass(frozen=True)
class ValidationResult:
    """All problems of one file plus the token count of each example (non-blank line), in order.

    An example whose `messages` list cannot be read counts 0 tokens.
    """

    path: str
    examples: int
    problems: tuple[Problem, ...]
    tokens_per_example: tuple[int, ...]
    counter_encoding: str
    exact_tokens: bool

    @property
    def errors(self) -> tuple[Problem, ...]:
        """Problems that make OpenAI reject the file."""
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """Problems OpenAI tolerates but that probably deserve a look."""
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def ok(self) -> bool:
        """True when the file has no errors (warnings allowed)."""
        return not self.errors


def validate_lines(
    lines: Iterable[str],
    *,
    name: str = "<lines>",
    model: str = DEFAULT_MODEL,
    token_limit: int | None = None,
    min_examples: int = 10,
) -> ValidationResult:
    """Validate JSONL lines (with or without line endings); `name` labels the problems.

    `token_limit` (tokens per example, e.g. 65 536 for gpt-4o/4.1) enables the over-limit warning;
    None skips it. Tokens are counted with `counter_for(model)`.
    """
    checker = _Checker(name, counter_for(model), token_limit)
    for number, text in enumerate(lines, start=1):
        checker.feed(number, text)
    return checker.finish(min_examples)


def validate_file(
    path: Path,
    *,
    model: str = DEFAULT_MODEL,
    token_limit: int | None = None,
    min_examples: int = 10,
) -> ValidationResult:
    """Validate a JSONL file, streaming it line by line; lines that are not UTF-8 are errors.

    Raises OSError when the file cannot be opened or read.
    """
    checker = _Checker(str(path), counter_for(model), token_limit)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                checker.feed_undecodable(number)
                continue
            checker.feed(number, text)
    return checker.finish(min_examples)


@cache
def _line_schema() -> Draft202012Validator:
    """The validator for one line: train.jsonl's schema, from the artifact registry."""
    return Draft202012Validator(load_schema(artifacts.TRAIN))


def _reject_constant(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def _label(value: object) -> str | None:
    """`value` when it is a short identifier-like string that cannot leak chat text, else None."""
    return value if isinstance(value, str) and _LABEL_RE.fullmatch(value) else None


def _key_field(prefix: str, key: str) -> str:
    """Field name of `key` below `prefix`; keys that are not identifiers are not spelled out."""
    shown = _label(key) or f"<key of {len(key)} characters>"
    return f"{prefix}.{shown}" if prefix else shown


def _is_binary(weight: object) -> bool:
    # bool is an int subclass in Python, but JSON true/false are not 0/1 (nor for the schema).
    return not isinstance(weight, bool) and isinstance(weight, (int, float)) and weight in (0, 1)


def _is_zero(weight: object) -> bool:
    return not isinstance(weight, bool) and isinstance(weight, (int, float)) and weight == 0


class _Checker:
    """Accumulates problems over the lines of one file, keeping only per-example summaries."""

    def __init__(self, path: str, counter: TokenCounter, token_limit: int | None) -> None:
        self.path = path
        self.counter = counter
        self.token_limit = token_limit
        self.problems: list[Problem] = []
        self.tokens: list[int] = []
        self.first_line_of: dict[bytes, int] = {}
        # Blank lines are errors inside the file but only warnings at its end, which is known later.
        self.pending_blank: list[int] = []
        self.error_count = 0
        self.schema = _line_schema()
        self.fast_schema = jsonschema_rs.validator_for(self.schema.schema)

    def add(self, line: int, field: str, code: str, message: str, severity: Severity = "error") -> None:
        self.problems.append(Problem(line, field, code, message, severity, self.path))
        self.error_count += severity == "error"

    def feed(self, number: int, text: str) -> None:
        """Check one line of text (line ending optional)."""
        if number == 1 and text.startswith("\ufeff"):
            self.add(
                1,
                "",
                "bom",
                "byte-order mark at the start; save as UTF-8 without BOM",
                "warning",
            )
            text = text[1:]
        if not text.strip():
            self.pending_blank.append(number)
            return
        self._flush_blank()
        self.tokens.append(self._example(number, text))

    def feed_undecodable(self, number: int) -> None:
        """Record a line whose bytes are not UTF-8."""
        self._flush_blank()
        self.add(number, "", "invalid_utf8", "line is not valid UTF-8; OpenAI reads only UTF-8")
        self.tokens.append(0)

    def finish(self, min_examples: int) -> ValidationResult:
        """File-level checks; the result lists problems by line, file-level ones first."""
        for number in self.pending_blank:
            self.add(
                number,
                "",
                "trailing_blank_line",
                "blank line at the end of the file",
                "warning",
            )
        examples = len(self.tokens)
        if examples < min_examples:
            self.add(
                0,
                "",
                "too_few_examples",
                f"the file has {examples} example(s); OpenAI needs at least {min_examples}",
            )
        return ValidationResult(
            path=self.path,
            examples=examples,
            problems=tuple(sorted(self.problems, key=lambda p: p.line)),
            tokens_per_example=tuple(self.tokens),
            counter_encoding=self.counter.encoding,
            exact_tokens=self.counter.exact,
        )

    def _flush_blank(self) -> None:
        for number in self.pending_blank:
            self.add(
                number,
                "",
                "blank_line",
                "blank line inside the file; every line must be an example",
            )
        self.pending_blank.clear()

    def _example(self, number: int, text: str) -> int:
        """Check one example line and return its token count."""
        try:
            example = orjson.loads(text)
        except orjson.JSONDecodeError:
            # orjson refuses some valid JSON (lone surrogate escapes, huge integers): the
            # standard library decides those lines.
            try:
                example = json.loads(text, parse_constant=_reject_constant)
            except (ValueError, RecursionError):
                self.add(number, "", "invalid_json", "line is not valid JSON")
                return 0
        if not isinstance(example, dict):
            self.add(number, "", "not_object", 'line is not a JSON object {"messages": [...]}')
            return 0
        errors_before = self.error_count
        self._check_duplicate(number, example)
        for key in example:
            if key not in TOP_LEVEL_KEYS:
                self.add(
                    number,
                    _key_field("", key),
                    "unknown_key",
                    "unknown top-level key (allowed: messages, tools)",
                )
        tools = example.get("tools", [])
        if not (isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)):
            self.add(number, "tools", "invalid_tools", "tools must be a list of objects")
        messages = example.get("messages")
        if "messages" not in example:
            self.add(number, "messages", "missing_messages", "no messages list")
        elif not isinstance(messages, list):
            self.add(number, "messages", "messages_not_list", "messages must be a list")
        elif not messages:
            self.add(number, "messages", "empty_messages", "messages is empty")
        else:
            self._check_messages(number, messages)
        # The rules already explain an invalid line precisely; the schema is the safety net for
        # lines they pass, so running it on the others would only repeat them less clearly.
        if self.error_count == errors_before:
            self._check_schema(number, example)
        if not isinstance(messages, list):
            return 0
        tokens = self.counter.count_example([m for m in messages if isinstance(m, dict)])
        if self.token_limit is not None and tokens > self.token_limit:
            kind = "tokens" if self.counter.exact else "tokens (estimated)"
            self.add(
                number,
                "messages",
                "over_token_limit",
                f"{tokens} {kind}, over the limit of {self.token_limit}; OpenAI truncates the example from the end",
                "warning",
            )
        return tokens

    def _check_messages(self, number: int, messages: list[object]) -> None:
        trained = has_user = False
        for index, message in enumerate(messages):
            where = f"messages[{index}]"
            if not isinstance(message, dict):
                self.add(number, where, "message_not_object", "message is not a JSON object")
                continue
            for key in message:
                if key not in MESSAGE_KEYS:
                    self.add(
                        number,
                        _key_field(where, key),
                        "unknown_message_key",
                        "unknown message key (allowed: role, content, name, weight)",
                    )
            role = message.get("role")
            self._check_role(number, where, index, message)
            self._check_content(number, where, message)
            if "name" in message and not isinstance(message["name"], str):
                self.add(number, f"{where}.name", "invalid_name", "name must be a string")
            if "weight" in message:
                if not _is_binary(message["weight"]):
                    self.add(number, f"{where}.weight", "invalid_weight", "weight must be 0 or 1")
                if role in ("system", "user"):
                    self.add(
                        number,
                        f"{where}.weight",
                        "weight_on_non_assistant",
                        f"weight is only allowed on assistant messages, not on {role} messages",
                    )
            trained = trained or (role == "assistant" and not _is_zero(message.get("weight")))
            has_user = has_user or role == "user"
        if not trained:
            self.add(
                number,
                "messages",
                "no_trainable_assistant",
                "no assistant message to train on (add one, or give one weight 1)",
            )
        if not has_user:
            self.add(number, "messages", "no_user_message", "no user message", "warning")
        last = messages[-1]
        if isinstance(last, dict) and last.get("role") != "assistant":
            self.add(
                number,
                f"messages[{len(messages) - 1}].role",
                "last_not_assistant",
                "the example ends on a non-assistant message, which teaches nothing",
                "warning",
            )

    def _check_role(self, number: int, where: str, index: int, message: dict[str, object]) -> None:
        field = f"{where}.role"
        if "role" not in message:
            self.add(number, field, "missing_role", "message has no role")
            return
        role = message["role"]
        if role not in ROLES:
            shown = _label(role)
            what = f"unknown role {shown!r}" if shown else "unknown role"
            self.add(number, field, "unknown_role", f"{what} (use system, user or assistant)")
        elif role == "system" and index > 0:
            self.add(
                number,
                field,
                "system_not_first",
                "a system message must be the first message",
            )

    def _check_content(self, number: int, where: str, message: dict[str, object]) -> None:
        field = f"{where}.content"
        if "content" not in message:
            self.add(number, field, "missing_content", "message has no content")
            return
        content = message["content"]
        if not isinstance(content, str):
            self.add(number, field, "content_not_string", "content must be a string")
        elif not content:
            self.add(number, field, "empty_content", "content is empty")
        elif found := SPECIAL_TOKEN_RE.search(content):
            self.add(
                number,
                field,
                "special_token",
                f"content contains the special-token string {found.group()!r} (OpenAI rejects it)",
            )

    def _check_duplicate(self, number: int, example: dict[str, object]) -> None:
        # Canonical form, so key order and spacing do not hide a duplicate; ASCII-escaped so lone
        # surrogates (valid in JSON escapes) still encode.
        try:
            canonical = orjson.dumps(example, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # lone surrogates, huge integers: the standard library copes
            canonical = json.dumps(example, sort_keys=True, separators=(",", ":")).encode("ascii")
        digest = hashlib.blake2b(canonical, digest_size=16).digest()
        first = self.first_line_of.setdefault(digest, number)
        if first != number:
            self.add(number, "", "duplicate_example", f"same example as line {first}", "warning")

    def _check_schema(self, number: int, example: dict[str, object]) -> None:
        # The compiled validator decides (the pure-Python one alone costs ~1 s per 10 MB);
        # jsonschema explains the rare failure.
        if self.fast_schema.is_valid(example):
            return
        for error in self.schema.iter_errors(example):
            field = ""
            for part in error.absolute_path:
                field = f"{field}[{part}]" if isinstance(part, int) else _key_field(field, part)
            self.add(
                number,
                field,
                "schema",
                f"breaks {SCHEMA_FILE} (keyword {error.validator!r}) though no rule caught it; "
                "this is a bug in imessage-finetune, please report it",
            )
