"""The held-out set by time: the newest conversations, kept out of training.

The question users ask is how the model answers *next* week, so the evaluation holds out the
newest part of the history rather than a random sample. The split is a cutoff time: an
example whose first message is at or after the cutoff is held out, one whose last message is
before it is trained on, and one that spans the cutoff (a conversation that was going on at
that moment, or a window overlapping both sides) is used for neither and counted. So no
message of a held-out example can be in a training example, overlapping windows included:
every training message is older than every held-out one.

The cutoff is either a number of days before the newest message, or chosen so that about a
share of the examples is held out: among the examples' start times, the one whose split is
closest to the share, counting every example lost at the boundary as one more off target
(ties go to the later cutoff, which holds out less).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DAY = 86_400.0
Side = Literal["train", "heldout", "boundary"]


@dataclass(frozen=True)
class Span:
    """The time an example covers: its first and last message (Unix seconds)."""

    start: float
    end: float


@dataclass(frozen=True)
class TimeSplit:
    """Where each example goes, and the cutoff that decided it (None: nothing held out)."""

    cutoff: float | None
    sides: tuple[Side, ...]

    def count(self, side: Side) -> int:
        """How many examples are on `side`."""
        return self.sides.count(side)


def side_of(span: Span, cutoff: float | None) -> Side:
    """Which side of the cutoff an example is on."""
    if cutoff is None or span.end < cutoff:
        return "train"
    if span.start >= cutoff:
        return "heldout"
    return "boundary"


def split_by_time(spans: Sequence[Span], *, share: float, days: float) -> TimeSplit:
    """Hold out the newest examples: those after `days` before the newest message when `days`
    is more than 0, else about `share` of them (0 holds out nothing)."""
    if not spans or (days <= 0 and share <= 0):
        return TimeSplit(None, tuple("train" for _ in spans))
    cutoff = max(s.end for s in spans) - days * DAY if days > 0 else _cutoff_for_share(spans, share)
    return TimeSplit(cutoff, tuple(side_of(s, cutoff) for s in spans))


def _cutoff_for_share(spans: Sequence[Span], share: float) -> float | None:
    target = max(1, math.ceil(share * len(spans)))
    starts = sorted({s.start for s in spans})
    ends = sorted(s.end for s in spans)
    begun = sorted(s.start for s in spans)
    best: tuple[float, float] | None = None  # (cost, -cutoff)
    for cutoff in starts[1:]:  # the earliest start would hold out everything
        held = len(begun) - bisect_left(begun, cutoff)
        trained = bisect_left(ends, cutoff)
        if not trained:  # a model trained on nothing
            continue
        boundary = len(spans) - held - trained
        cost = abs(held - target) + boundary
        if best is None or (cost, -cutoff) < best:
            best = (cost, -cutoff)
    # None when no cutoff leaves something to train on: nothing is held out.
    return None if best is None else -best[1]
