"""Training examples in the base model's own format: its chat template, and a loss mask that
keeps only the assistant's replies. Shared by the backends that train here (`local`, `mlx`):
it needs only a Hugging Face tokenizer (a fast one, for offsets) and jinja2, no framework.

A line of train.jsonl is rendered with `tokenizer.apply_chat_template`. Each reply's place
in the rendered text is found by rendering the conversation up to the reply (with the
generation prompt) and up to its end: the tokens in between, the reply and its end-of-turn
token (not the whitespace a template writes after it), are the ones the loss is computed on. Templates that rewrite earlier turns (some
drop a reasoning part from past replies) make those spans unreliable: such a reply is then
left untrained and counted, never trained on the wrong tokens.

Before rendering, senders' names (OpenAI's `name`, which chat templates ignore) become a
"Name: " prefix, consecutive messages of one role are joined (strict templates require
alternating roles), and strings the tokenizer would read as its special tokens are
neutralised. A conversation longer than `max_seq_length` is split after a reply into pieces
that fit; an exchange that cannot fit alone is dropped and counted.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError

IGNORE = -100  # the label PyTorch's cross-entropy skips
NEUTRALISED = "[special token]"


@dataclass(frozen=True)
class Turn:
    """One message as rendered: role, text, and whether the loss covers it."""

    role: str
    content: str
    trained: bool = False


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and labels (IGNORE outside the trained replies), as 32-bit arrays: a heavy
    user's tens of millions of tokens would take ten times the memory as lists of ints."""

    input_ids: array
    labels: array

    @property
    def trained_tokens(self) -> int:
        """How many tokens the loss covers."""
        return sum(label != IGNORE for label in self.labels)


@dataclass
class ExampleStats:
    """What happened to the conversations on their way to examples (for model.json)."""

    conversations: int = 0
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, keys sorted."""
        return {
            "conversations": self.conversations,
            "examples": self.examples,
            "tokens": self.tokens,
            # model.json's `trained_tokens` counts every epoch; this is one pass.
            "trained_tokens_per_epoch": self.trained_tokens,
            "dropped": dict(sorted(self.dropped.items())),
            "changed": dict(sorted(self.changed.items())),
        }


def to_turns(messages: Sequence[Mapping[str, Any]], special: Sequence[str], stats: ExampleStats) -> list[Turn]:
    """A train.jsonl conversation as alternating turns (names folded in, specials neutralised)."""
    turns: list[Turn] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if message.get("name"):
            content = f"{message['name']}: {content}"
            stats.changed["sender_name_as_prefix"] += 1
        for token in special:
            if token in content:
                stats.changed["special_token_neutralised"] += content.count(token)
                content = content.replace(token, NEUTRALISED)
        trained = role == "assistant" and message.get("weight", 1) != 0
        if turns and turns[-1].role == role:
            stats.changed["same_role_messages_joined"] += 1
            last = turns.pop()
            turns.append(Turn(role, f"{last.content}\n{content}", last.trained or trained))
        else:
            turns.append(Turn(role, content, trained))
    return turns


class ExampleBuilder:
    """Turns conversations into tokenized examples for one tokenizer and length limit."""

    def __init__(self, tokenizer: Any, max_seq_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.special = sorted(
            {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
            | set(tokenizer.all_special_tokens),
            key=len,
            reverse=True,
        )
        self.stats = ExampleStats()

    def build(self, conversations: Iterable[Mapping[str, Any]]) -> list[TokenizedExample]:
        """Every conversation (a train.jsonl line) as one or more examples."""
        examples = []
        for line in conversations:
            self.stats.conversations += 1
            examples += self._conversation(to_turns(line["messages"], self.special, self.stats))
        self.stats.examples = len(examples)
        self.stats.tokens = sum(len(e.input_ids) for e in examples)
        self.stats.trained_tokens = sum(e.trained_tokens for e in examples)
        return examples

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """The tokens of a prompt asking for the next reply to `messages`, rendered as the
        training examples are: names as prefixes, special tokens neutralised, one turn per
        side, then the template's header of an assistant reply. When the last message is the
        assistant's, it is a reply begun: the prompt ends inside it, for the model to continue
        (the template's `continue_final_message`)."""
        turns = to_turns(messages, self.special, ExampleStats())
        if turns and turns[-1].role == "assistant":
            text = self.tokenizer.apply_chat_template(
                [{"role": t.role, "content": t.content} for t in turns], tokenize=False, continue_final_message=True
            )
        else:
            text = self._render(turns, True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _conversation(self, turns: list[Turn]) -> list[TokenizedExample]:
        try:
            whole = self._tokenize(turns)
        except TemplateError:
            # Counted, not quoted: a template's message may repeat the conversation's text.
            self.stats.dropped["rejected_by_chat_template"] += 1
            return []
        if whole is None:
            self.stats.dropped["no_trained_reply"] += 1
            return []
        if len(whole.input_ids) <= self.max_seq_length:
            return [whole]
        self.stats.changed["conversations_split_to_fit_max_seq_length"] += 1
        return self._split(turns)

    def _split(self, turns: list[Turn]) -> list[TokenizedExample]:
        """Pieces that each end on a reply and fit, greedily longest first."""
        system = turns[:1] if turns[0].role == "system" else []
        body = turns[len(system) :]
        reply_ends = [i + 1 for i, t in enumerate(body) if t.role == "assistant"]
        pieces: list[TokenizedExample] = []
        start = 0
        while True:
            ends = [e for e in reply_ends if e > start]
            if not ends:
                return pieces
            best = None
            for end in ends:
                candidate = self._tokenize(system + body[start:end])
                if candidate is not None and len(candidate.input_ids) > self.max_seq_length:
                    break
                best = (end, candidate)
            if best is None:
                self.stats.dropped["exchanges_longer_than_max_seq_length"] += 1
                start = ends[0]
                continue
            end, piece = best
            if piece is not None:
                pieces.append(piece)
            start = end

    def _render(self, turns: Sequence[Turn], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": t.role, "content": t.content} for t in turns],
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )

    def _prompt(self, turns: Sequence[Turn], reply: Turn) -> str | None:
        """The text before `reply`: the turns so far and the reply's header (with the
        template's own opening, such as a default system prompt, when the reply comes first)."""
        try:
            return self._render(turns, True)
        except (TemplateError, ValueError):  # transformers refuses to render no turns at all
            if turns:
                return None
        # The reply opens the conversation: everything before its text is the header.
        alone = self._render([reply], False)
        found = alone.rfind(reply.content)
        return alone[:found] if found >= 0 else None

    def _tokenize(self, turns: list[Turn]) -> TokenizedExample | None:
        """The rendered turns with their labels; None when no reply is trained."""
        text = self._render(turns, False)
        spans = []
        for i, turn in enumerate(turns):
            if not turn.trained:
                continue
            before = self._prompt(turns[:i], turn)
            through = self._render(turns[: i + 1], False)
            # The separator a template writes after the end-of-turn token is not the reply's.
            end = len(through.rstrip())
            if before is not None and text.startswith(through) and through.startswith(before) and end > len(before):
                spans.append((len(before), end))
            else:
                self.stats.changed["replies_untrained_template_rewrites_history"] += 1
        if not spans:
            return None
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = array("i", encoded["input_ids"])
        labels = array(
            "i",
            (
                token if any(lo <= start < hi for lo, hi in spans) else IGNORE
                for token, (start, _) in zip(ids, encoded["offset_mapping"], strict=True)
            ),
        )
        return TokenizedExample(ids, labels)


# How the builder's counts read in a sentence, as both backends that train here say them.
_CHANGES = {
    "conversations_split_to_fit_max_seq_length": "split in pieces that fit max_seq_length {limit}",
}
_DROPS = {
    "exchanges_longer_than_max_seq_length": "exchange(s) longer than max_seq_length {limit} left out",
    "no_trained_reply": "conversation(s) without a reply to learn left out",
    "rejected_by_chat_template": "conversation(s) the chat template refused left out",
}


def describe_examples(stats: dict[str, Any], limit: int) -> str:
    """`58 conversations in train.jsonl -> 57 examples (1 split in pieces that fit...; 1
    exchange(s) longer than ... left out)`: why the counts differ, in words."""
    why = [f"{n} {text.format(limit=limit)}" for key, text in _CHANGES.items() if (n := stats["changed"].get(key))]
    why += [f"{n} {text.format(limit=limit)}" for key, text in _DROPS.items() if (n := stats["dropped"].get(key))]
    why += [f"{n} {key.replace('_', ' ')}" for key, n in stats["dropped"].items() if key not in _DROPS]
    detail = f" ({'; '.join(why)})" if why else ""
    return f"{stats['conversations']} conversations in train.jsonl -> {stats['examples']} examples{detail}"
