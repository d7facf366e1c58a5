"""A stylometric profile of a set of messages, and a distance between two sets.

The distance is Burrows' Delta, the classic measure of authorship attribution, with single
messages as the documents: every feature of a message (its length, casing, punctuation,
emoji, and how often each of the most common character n-grams occurs in it) is compared
as a difference of means between two sets, in standard deviations of that feature over a
fixed reference set of real messages, and the differences are averaged. 0 means the two sets
look the same on average; 1 means they differ by one typical message-to-message spread.

Surface features and character n-grams are averaged separately and then together, so the
forty n-grams do not drown the dozen surface features. A distance means little alone: the
evaluation reports it beside its calibration (the owner's own replies compared with each
other, and other people's messages compared with the owner's), measured on sets of the
same size against the same reference.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

NGRAM_SIZES = (2, 3)
NGRAM_FEATURES = 40  # the most frequent character n-grams of the reference set
MIN_SPREAD = 1e-6  # a feature that never varies in the reference tells nothing

_WORD = re.compile(r"\w+(?:['’]\w+)*")  # noqa: RUF001 (the typographic apostrophe phones type)
_LETTER = re.compile(r"[^\W\d_]")


def is_emoji(character: str) -> bool:
    """True for a pictographic character (emoji, pictographs, dingbats)."""
    code = ord(character)
    return (
        0x1F000 <= code <= 0x1FAFF
        or 0x2600 <= code <= 0x27BF
        or (unicodedata.category(character) == "So" and code > 0x2000)
    )


def _letters(text: str) -> list[str]:
    return _LETTER.findall(text)


def _first_letter_lower(text: str) -> float:
    letters = _letters(text)
    return float(bool(letters) and letters[0].islower())


def _uppercase_share(text: str) -> float:
    letters = _letters(text)
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def _per_word(pattern: str) -> Callable[[str], float]:
    def feature(text: str) -> float:
        return text.count(pattern) / max(1, len(_WORD.findall(text)))

    return feature


@dataclass(frozen=True)
class Feature:
    """One surface feature: its name in evaluation.json, its label, how to show its mean."""

    key: str
    label: str
    measure: Callable[[str], float]
    unit: str  # "chars", "words" (shown as the mean of the raw value) or "share" (as %)
    raw: Callable[[str], float] | None = None  # the value shown, when `measure` is a transform


SURFACE_FEATURES: tuple[Feature, ...] = (
    Feature("length", "length (characters)", lambda t: math.log1p(len(t)), "chars", lambda t: float(len(t))),
    Feature(
        "words", "words", lambda t: math.log1p(len(_WORD.findall(t))), "words", lambda t: float(len(_WORD.findall(t)))
    ),
    Feature("starts_lowercase", "starts in lower case", _first_letter_lower, "share"),
    Feature(
        "no_capitals",
        "no capital letter at all",
        lambda t: float(bool(_letters(t)) and not any(c.isupper() for c in _letters(t))),
        "share",
    ),
    Feature("uppercase_share", "share of letters in upper case", _uppercase_share, "share"),
    Feature(
        "ends_with_punctuation", "ends with . ! or ?", lambda t: float(t.rstrip()[-1:] in (".", "!", "?", "…")), "share"
    ),
    Feature("question", "has a question mark", lambda t: float("?" in t), "share"),
    Feature("exclamation", "has an exclamation mark", lambda t: float("!" in t), "share"),
    Feature("commas", "commas per word", _per_word(","), "share"),
    Feature("apostrophe", "has an apostrophe", lambda t: float("'" in t or "’" in t), "share"),  # noqa: RUF001
    Feature("emoji", "has an emoji", lambda t: float(any(is_emoji(c) for c in t)), "share"),
    Feature("digits", "has a digit", lambda t: float(any(c.isdigit() for c in t)), "share"),
    Feature("line_breaks", "has a line break", lambda t: float("\n" in t.strip()), "share"),
    Feature("ellipsis", "has an ellipsis", lambda t: float("..." in t or "…" in t), "share"),
)


def ngrams(text: str) -> Counter[str]:
    """Character n-grams of a message (lower case: casing is a surface feature already)."""
    padded = f" {' '.join(text.lower().split())} "
    found: Counter[str] = Counter()
    for size in NGRAM_SIZES:
        found.update(padded[i : i + size] for i in range(len(padded) - size + 1))
    return found


def _ngram_rates(text: str, chosen: Sequence[str]) -> list[float]:
    counts = ngrams(text)
    total = max(1, sum(counts.values()))
    return [counts[g] / total for g in chosen]


@dataclass(frozen=True)
class Reference:
    """The scale of every feature: chosen n-grams and each feature's spread over real messages."""

    ngrams: tuple[str, ...]
    spread: tuple[float, ...]  # surface features first, then n-grams

    @classmethod
    def from_messages(cls, messages: Sequence[str]) -> Reference:
        """The reference of a set of real messages (the owner's and other people's together)."""
        pooled: Counter[str] = Counter()
        for text in messages:
            pooled.update(ngrams(text))
        # Sorted by count, then by the n-gram itself: the same messages give the same choice.
        chosen = tuple(g for g, _ in sorted(pooled.items(), key=lambda kv: (-kv[1], kv[0]))[:NGRAM_FEATURES])
        vectors = [_vector(text, chosen) for text in messages]
        spread = tuple(_stdev([v[i] for v in vectors]) for i in range(len(SURFACE_FEATURES) + len(chosen)))
        return cls(chosen, spread)

    def vector(self, text: str) -> list[float]:
        """A message's features, in the reference's order."""
        return _vector(text, self.ngrams)


def _vector(text: str, chosen: Sequence[str]) -> list[float]:
    return [f.measure(text) for f in SURFACE_FEATURES] + _ngram_rates(text, chosen)


def _stdev(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _means(reference: Reference, messages: Sequence[str]) -> list[float]:
    vectors = [reference.vector(text) for text in messages]
    return [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]


@dataclass(frozen=True)
class Distance:
    """Delta between two sets: surface features, character n-grams, and their mean."""

    surface: float
    ngrams: float

    @property
    def total(self) -> float:
        """The one number the report and the verdict use."""
        return (self.surface + self.ngrams) / 2


def distance(reference: Reference, left: Sequence[str], right: Sequence[str]) -> Distance:
    """Burrows' Delta between two non-empty sets of messages, in the reference's spreads."""
    if not left or not right:
        raise ValueError("a style distance needs messages on both sides")
    a, b = _means(reference, left), _means(reference, right)
    split = len(SURFACE_FEATURES)
    parts = []
    for indices in (range(split), range(split, len(a))):
        terms = [abs(a[i] - b[i]) / reference.spread[i] for i in indices if reference.spread[i] > MIN_SPREAD]
        parts.append(sum(terms) / len(terms) if terms else 0.0)
    return Distance(surface=parts[0], ngrams=parts[1])


def profile(messages: Sequence[str]) -> dict[str, float]:
    """The surface features of a set as people read them: mean characters and words, shares in
    per cent (for the report's side-by-side chart and table)."""
    result: dict[str, float] = {}
    for feature in SURFACE_FEATURES:
        measure = feature.raw or feature.measure
        values = [measure(text) for text in messages]
        mean = sum(values) / len(values) if values else 0.0
        result[feature.key] = round(mean * 100 if feature.unit == "share" else mean, 2)
    return result


def feature_labels() -> Mapping[str, tuple[str, str]]:
    """Each surface feature's label and unit, for the report."""
    return {f.key: (f.label, f.unit) for f in SURFACE_FEATURES}
