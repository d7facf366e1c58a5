"""The shaping rules, written once: how chats become training examples.

Used by the `merged` and `dataset` stages (on the plain dicts of sessions.json and
merged.json) and by the LangChain-compatible functions of `chat_utils` (on message objects)
alike; where LangChain documents another behaviour, that is a parameter here, not a second
implementation.

- `voice`: who the assistant is (`ai_matcher`);
- `runs`: which consecutive messages merge into one turn, its text and its record;
- `conversations`: cutting chats at idle gaps, and conversations into windows of a budget;
- `lines`: OpenAI chat messages and lines, names, token costs, the held-out split;
- `redaction`: phone numbers (`phonenumbers`), e-mails, codes, URLs and known people;
- `shaper`: the `[dataset]` settings applied to one chat at a time.
"""

from imessage_finetune.shaping.conversations import split_on_idle_gap, window
from imessage_finetune.shaping.lines import (
    in_validation,
    neutralise_special_tokens,
    openai_example,
    openai_message,
    openai_name,
)
from imessage_finetune.shaping.redaction import (
    DEFAULT_REGION,
    PLACEHOLDERS,
    KnownPeople,
    Redactor,
    phone_region,
    redact,
)
from imessage_finetune.shaping.runs import join_run, run_kwargs, runs, speaker
from imessage_finetune.shaping.shaper import Preparation, Shaper, ShapingCounts, Turn
from imessage_finetune.shaping.voice import OWNER, OWNER_SENDER, ai_matcher

__all__ = [
    "DEFAULT_REGION",
    "OWNER",
    "OWNER_SENDER",
    "PLACEHOLDERS",
    "KnownPeople",
    "Preparation",
    "Redactor",
    "Shaper",
    "ShapingCounts",
    "Turn",
    "ai_matcher",
    "in_validation",
    "join_run",
    "neutralise_special_tokens",
    "openai_example",
    "openai_message",
    "openai_name",
    "phone_region",
    "redact",
    "run_kwargs",
    "runs",
    "speaker",
    "split_on_idle_gap",
    "window",
]
