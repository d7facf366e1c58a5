"""The `[dataset]` rules applied to one chat at a time: conversations, turns, windows.

`Shaper` holds what a run of the rules needs (the voice, the redactor, the token budget) and
counts what they drop. The `merged` stage runs `Shaper.shape_chat` on sessions.json's dicts;
the LangChain-compatible steps in `chat_utils` call the same pieces on message objects, so
both give the same examples (the README's recipe test holds them to it):

1. a chat is cut into conversations where nobody wrote for `idle_gap_hours`;
2. runs of one speaker are merged (`runs`);
3. the voice (`ai_sender`) becomes the AI side (`voice`);
4. conversations without an AI turn are dropped;
5. each turn is prepared (`Preparation`): redaction, special-token strings neutralised, group
   senders named (OpenAI `name`) or prefixed, with a stable "Person N" for a sender whose
   name redaction hides;
6. conversations are cut into windows of at most `max_tokens`, each ending on an AI turn.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imessage_finetune.config import DatasetConfig
from imessage_finetune.shaping.conversations import split_on_idle_gap, window
from imessage_finetune.shaping.lines import (
    example_budget,
    message_tokens,
    neutralise_special_tokens,
    openai_message,
    openai_name,
)
from imessage_finetune.shaping.redaction import DEFAULT_REGION, KnownPeople, Redactor, phone_region
from imessage_finetune.shaping.runs import join_run, run_kwargs, runs, speaker
from imessage_finetune.shaping.voice import ai_matcher
from imessage_finetune.tokens import TokenCounter

# What a merged turn of merged.json keeps of its first message's additional_kwargs.
TURN_KEYS = ("sender", "is_from_me", "handle", "message_time", "message_time_iso")


@dataclass(slots=True)
class Turn:
    """One merged turn of the `merged` stage, in the order merged.json writes it."""

    kind: str  # "ai" or "human"
    content: str
    additional_kwargs: dict[str, Any]
    name: str | None = None


@dataclass
class ShapingCounts:
    """What the rules dropped and replaced, by reason (the merged.json stats)."""

    dropped: Counter[str] = field(default_factory=Counter)
    redactions: Counter[str] = field(default_factory=Counter)


class Preparation:
    """What one chat's turns become before they are counted: redacted, special tokens
    neutralised, group senders named or prefixed. Labels stay stable across the chat."""

    def __init__(self, shaper: Shaper, is_group: bool, handles: Iterable[str]) -> None:
        self.shaper = shaper
        self.is_group = is_group
        options = shaper.options
        self.redactor = shaper.redactor if shaper.redactor.active else None
        self.region = DEFAULT_REGION
        if self.redactor is not None:
            auto = options.phone_region == "auto"
            self.region = phone_region(handles) if auto else options.phone_region
        self.by_name = options.group_chats == "name"
        # sender -> (label, OpenAI name): labels stay stable across the chat.
        self.labels: dict[str, tuple[str, str]] = {}

    def __call__(self, content: str, is_ai: bool, sender: str) -> tuple[str, str | None]:
        """A turn's content and OpenAI `name` (None for none), given its text and speaker."""
        counts = self.shaper.counts.redactions
        if self.redactor is not None:
            content, found = self.redactor(content, self.region)
            counts.update(found)
        content, special = neutralise_special_tokens(content)
        if special:
            counts["special_token"] += special
        if not self.is_group or is_ai:
            return content, None
        labelled = self.labels.get(sender)
        if labelled is None:
            hidden = self.redactor is not None and self.redactor(sender, self.region)[0] != sender
            label = f"Person {len(self.labels) + 1}" if hidden else sender
            labelled = self.labels[sender] = (label, openai_name(label))
        if self.by_name:
            return content, labelled[1]
        return f"{labelled[0]}: {content}", None


class Shaper:
    """The `[dataset]` rules for one run; `counts` says what they dropped and replaced.

    Args:
        options: The `[dataset]` settings.
        counter: The target model's token counter (windows need it).
        known: The people to hide when `options.redact_known_names` is on.
    """

    def __init__(self, options: DatasetConfig, counter: TokenCounter, known: KnownPeople | None = None) -> None:
        self.options = options
        self.counter = counter
        self.is_ai = ai_matcher(options.ai_sender)
        self.redactor = Redactor(
            phones=options.redact_phones,
            emails=options.redact_emails,
            codes=options.redact_codes,
            urls=options.redact_urls,
            known=known if options.redact_known_names else None,
        )
        self.gap_seconds = int(options.idle_gap_hours * 3600)
        self.budget = example_budget(options.max_tokens, options.system_prompt, counter)
        self.counts = ShapingCounts()

    def preparation(self, chat: Mapping[str, Any] | None) -> Preparation:
        """The turn preparation of one chat (a sessions.json entry, or None for unknown)."""
        if chat is None:
            return Preparation(self, False, ())
        handles = [p["handle"] for p in chat.get("participants", ())]
        return Preparation(self, bool(chat.get("is_group")), handles)

    def excludes(self, chat: Mapping[str, Any] | None) -> bool:
        """Whether a whole chat is left out (a group, with `group_chats = "exclude"`); counted."""
        excluded = bool(chat and chat.get("is_group")) and self.options.group_chats == "exclude"
        if excluded:
            self.counts.dropped["group_chat"] += 1
        return excluded

    def keeps(self, kinds: Iterable[str]) -> bool:
        """Whether a conversation with turns of these kinds has an AI turn; counted if not."""
        if "ai" in kinds:
            return True
        self.counts.dropped["no_ai_turn"] += 1
        return False

    def tokens(self, message: Mapping[str, object]) -> int:
        """What a turn adds to its example's tokens, given it as its line will hold it."""
        return message_tokens(self.counter, message)

    def windows(self, lines: Sequence[Mapping[str, object]], is_ai: Sequence[bool]) -> list[range]:
        """The windows of one conversation, given as the OpenAI messages its turns become, as
        index ranges of its turns; drops are counted.

        A conversation that fits the budget by `TokenCounter.most_tokens` is one window (up to
        its last AI turn) without a token being counted: most are, and tokenizing is the most
        expensive step of the stage.
        """
        if sum(map(self.counter.most_tokens, lines)) <= self.budget:
            last = max((i for i, ai in enumerate(is_ai) if ai), default=-1)
            if last >= 0:
                return [range(last + 1)]
        tokens = [self.tokens(line) for line in lines]
        indices = range(len(tokens))
        windows = window(indices, self.budget, self.options.overlap_messages, tokens.__getitem__, is_ai.__getitem__)
        oversized = sum(1 for count, ai in zip(tokens, is_ai, strict=True) if ai and count > self.budget)
        if oversized:
            self.counts.dropped["ai_turn_over_budget"] += oversized
        if not windows:
            self.counts.dropped["no_ai_turn_within_budget"] += 1
        return [range(w[0], w[-1] + 1) for w in windows]

    def shape_chat(self, session: Mapping[str, Any]) -> Iterator[list[Turn]]:
        """The training windows of one sessions.json chat, as merged turns."""
        if self.excludes(session):
            return
        prepare = self.preparation(session)
        separator = self.options.merge_separator
        is_ai = self.is_ai
        for part in split_on_idle_gap(session["messages"], self.gap_seconds, _kwargs):
            turns = []
            for run in runs(part, _speaker):
                data = [message["data"] for message in run]
                kwargs = run_kwargs([d["additional_kwargs"] for d in data], TURN_KEYS)
                content = join_run([d["content"] for d in data], separator)
                turns.append(Turn("ai" if is_ai(kwargs) else "human", content, kwargs))
            if not self.keeps(turn.kind for turn in turns):
                continue
            for turn in turns:
                turn.content, turn.name = prepare(turn.content, turn.kind == "ai", turn.additional_kwargs["sender"])
            lines = [openai_message(t.kind, t.content, name=t.name) for t in turns]
            for span in self.windows(lines, [t.kind == "ai" for t in turns]):
                yield turns[span.start : span.stop]


def _kwargs(message: Mapping[str, Any]) -> Mapping[str, Any]:
    kwargs: Mapping[str, Any] = message["data"]["additional_kwargs"]
    return kwargs


def _speaker(message: Mapping[str, Any]) -> Any:
    return speaker(message["type"], message["data"]["additional_kwargs"])


__all__ = ["DEFAULT_REGION", "TURN_KEYS", "Preparation", "Shaper", "ShapingCounts", "Turn"]
