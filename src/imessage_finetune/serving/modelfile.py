"""The model's chat template as an Ollama TEMPLATE, and the Modelfile around it.

A model exported to Ollama answers worse than the one that was trained when its chat
template or stop tokens are lost on the way. So the TEMPLATE is not guessed from the
architecture: it is derived from the tokenizer's own (Jinja) chat template, by rendering
probe conversations whose contents are markers and reading off what the template writes
around each message (`TurnFormat`), then checked: the Go template written from it must give,
for a set of conversations (with and without a system message, one to three exchanges,
contents with spaces, newlines and non-ASCII text), exactly the text the tokenizer gives. A
template that cannot be written this way (one that rewrites earlier turns, or changes a
message's text) is refused with the reason, never exported approximately.

Ollama's template data (template/template.go): `.System` is the system messages joined,
`.Messages` every message with `.Role` and `.Content` (consecutive messages of one role
merged), and a conversation that ends with the user's message gets the generation prompt;
one that ends with an assistant message is a reply to continue (no end-of-turn after it), as
in Ollama's own templates. A request without a system message gets the Modelfile's SYSTEM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from imessage_finetune.errors import FinetuneError

MARKERS = ("qzSYSq", "qzUSR1q", "qzAST1q", "qzUSR2q", "qzAST2q")


class TemplateNotTranslatable(FinetuneError):
    """The model's chat template cannot be written as an Ollama TEMPLATE exactly."""


@dataclass(frozen=True)
class TurnFormat:
    """What a chat template writes around each message."""

    system_header: str
    """Before the system message's text (the start of the conversation included)."""
    system_suffix: str
    default_header: str
    """The start of a conversation without a system message (some templates write a default
    system message there)."""
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    generation_prompt: str

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The text the Go template gives for `messages` (Python's rendering of the same rule):
        the generation prompt after a final user message; a final assistant message is left
        open, to be continued."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        text = f"{self.system_header}{system}{self.system_suffix}" if system else self.default_header
        for i, message in enumerate(messages):
            last = i == len(messages) - 1
            if message["role"] == "user":
                text += self.user_prefix + message["content"] + self.user_suffix
                text += self.generation_prompt if last else ""
            elif message["role"] == "assistant":
                text += self.assistant_prefix + message["content"] + ("" if last else self.assistant_suffix)
        return text

    def go_template(self) -> str:
        """The Go text/template for Ollama's TEMPLATE (no whitespace trimming: every
        character between actions is the template's own)."""

        def text(s: str) -> str:
            # "{{" would open an action: write it as a string constant instead.
            return s.replace("{{", "\x00").replace("\x00", '{{ "{{" }}')

        return (
            f"{{{{ if .System }}}}{text(self.system_header)}{{{{ .System }}}}{text(self.system_suffix)}"
            f"{{{{ else }}}}{text(self.default_header)}{{{{ end }}}}"
            "{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
            f'{{{{ if eq .Role "user" }}}}{text(self.user_prefix)}{{{{ .Content }}}}{text(self.user_suffix)}'
            f"{{{{ if $last }}}}{text(self.generation_prompt)}{{{{ end }}}}"
            f'{{{{ else if eq .Role "assistant" }}}}{text(self.assistant_prefix)}{{{{ .Content }}}}'
            f"{{{{ if not $last }}}}{text(self.assistant_suffix)}{{{{ end }}}}"
            "{{ end }}{{ end }}"
        )


def sample_conversations(system_prompt: str = "You are me.") -> list[list[dict[str, str]]]:
    """The conversations a TEMPLATE is checked on: with and without a system message, one to
    three exchanges, ending with the user (generation prompt) or the assistant (continued);
    contents with spaces at the ends, newlines, quotes, braces and non-ASCII text."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    exchanges = [
        ("are you free tonight?", "yes! 8pm?"),
        (" sure \n see you there ", "🐢 «ok» {{ .Content }}"),
        ('he said "no"\n\nreally', " fine."),
    ]
    conversations = []
    for head in (system, []):
        for n in (1, 2, 3):
            turns: list[dict[str, str]] = list(head)
            for user, assistant in exchanges[: n - 1]:
                turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
            turns.append({"role": "user", "content": exchanges[n - 1][0]})
            conversations.append(turns)
            conversations.append([*turns, {"role": "assistant", "content": exchanges[n - 1][1]}])
    return conversations


def hf_render(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """The tokenizer's own text for `messages`, in the convention above: generation prompt
    after a final user message, a final assistant message continued."""
    ends_with_reply = messages[-1]["role"] == "assistant"
    return str(
        tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            tokenize=False,
            add_generation_prompt=not ends_with_reply,
            continue_final_message=ends_with_reply,
        )
    )


def infer_turn_format(tokenizer: Any) -> TurnFormat:
    """Read the tokenizer's chat template's `TurnFormat`, checked on `sample_conversations`;
    TemplateNotTranslatable when the template does not fit one."""
    from jinja2 import TemplateError

    s, u1, a1, u2, _ = MARKERS

    def render(messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        try:
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt))
        except (TemplateError, ValueError) as exc:
            raise TemplateNotTranslatable(f"the chat template refuses a plain conversation ({exc})") from None

    def split(text: str, markers: Sequence[str]) -> list[str]:
        pieces = []
        for marker in markers:
            if text.count(marker) != 1:
                raise TemplateNotTranslatable("the chat template does not write each message's text once, as it is")
            before, text = text.split(marker)
            pieces.append(before)
        return [*pieces, text]

    def cut_prefix(text: str, prefix: str) -> str:
        if not text.startswith(prefix):
            raise TemplateNotTranslatable("the chat template writes a turn differently depending on its place")
        return text[len(prefix) :]

    system, user, assistant = ({"role": r, "content": c} for r, c in (("system", s), ("user", u1), ("assistant", a1)))
    second = {"role": "user", "content": u2}
    p0, p1, p2, p3, p4 = split(render([system, user, assistant, second]), (s, u1, a1, u2))
    *_, assistant_suffix = split(render([system, user, assistant]), (s, u1, a1))
    user_suffix = p4
    assistant_prefix = cut_prefix(p2, user_suffix)
    user_prefix = cut_prefix(p3, assistant_suffix)
    if not p1.endswith(user_prefix):
        raise TemplateNotTranslatable("the chat template writes the first user message differently")
    q0, *_ = split(render([user, assistant, second]), (u1, a1, u2))
    if not q0.endswith(user_prefix):
        raise TemplateNotTranslatable("the chat template writes the first user message differently")
    without = render([system, user, assistant, second])
    generation_prompt = cut_prefix(render([system, user, assistant, second], True), without)
    found = TurnFormat(
        system_header=p0,
        system_suffix=p1[: len(p1) - len(user_prefix)],
        default_header=q0[: len(q0) - len(user_prefix)],
        user_prefix=user_prefix,
        user_suffix=user_suffix,
        assistant_prefix=assistant_prefix,
        assistant_suffix=assistant_suffix,
        generation_prompt=generation_prompt,
    )
    for conversation in sample_conversations():
        if found.render(conversation) != hf_render(tokenizer, conversation):
            raise TemplateNotTranslatable(
                "the chat template changes messages' text or earlier turns (for example trims spaces or "
                "drops past reasoning), which an Ollama TEMPLATE cannot do"
            )
    return found


def stop_tokens(tokenizer: Any, generation_config: Mapping[str, Any], fmt: TurnFormat) -> list[str]:
    """The tokens that end a reply: the generation config's end tokens, the tokenizer's, and
    the special tokens that close an assistant turn in the template."""
    ids = generation_config.get("eos_token_id")
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    found = [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    if tokenizer.eos_token:
        found.append(str(tokenizer.eos_token))
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    found += sorted((t for t in special if t in fmt.assistant_suffix), key=fmt.assistant_suffix.index)
    return list(dict.fromkeys(found))


def _quoted(value: str, what: str) -> str:
    """A Modelfile value in triple quotes, which Ollama's parser reads verbatim (no escapes);
    what it cannot hold is refused rather than changed."""
    if '"""' in value:
        raise TemplateNotTranslatable(
            f"the {what} contains three double quotes in a row, which a Modelfile cannot hold"
        )
    bad = sorted({c for c in value if not (c.isprintable() or c in " \t\r\n")})
    if bad:
        raise TemplateNotTranslatable(
            f"the {what} contains control characters ({', '.join(repr(c) for c in bad)}) that Ollama's Modelfile parser drops"
        )
    return f'"""{value}"""'


def modelfile(
    fmt: TurnFormat,
    stops: Sequence[str],
    system_prompt: str,
    generation_config: Mapping[str, Any],
    model_id: str,
) -> str:
    """The Modelfile for an export folder: FROM . (the merged weights beside it), the TEMPLATE,
    the training system prompt as SYSTEM, the stop tokens, and `chat`'s sampling settings."""
    lines = [
        f"# {model_id}, exported by imessage-finetune. It was trained on private messages and can",
        "# repeat them: keep this folder to yourself. Next: ollama create NAME -f Modelfile",
        "FROM .",
        f"TEMPLATE {_quoted(fmt.go_template(), 'chat template')}",
    ]
    if system_prompt:
        lines.append(f"SYSTEM {_quoted(system_prompt, 'system prompt')}")
    for stop in stops:
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    sampling = bool(generation_config.get("do_sample"))
    lines.append(f"PARAMETER temperature {generation_config.get('temperature', 1.0) if sampling else 0}")
    names = (
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("repetition_penalty", "repeat_penalty"),
        ("max_new_tokens", "num_predict"),
    )
    for key, name in names:
        value = generation_config.get(key)
        if value is not None:
            lines.append(f"PARAMETER {name} {value}")
    return "\n".join(lines) + "\n"
