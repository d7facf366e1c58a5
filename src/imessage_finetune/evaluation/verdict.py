"""One honest sentence from the figures: does the tuned model sound more like its owner?

The style part compares the tuned model's distance to the owner's real replies with the base
model's and with the calibration: the owner's own replies compared with each other (the
closest anything can get on this many replies) and other people's messages compared with
the owner's. The loss part says whether the tuned model predicts the held-out replies
better. Few replies make every figure noisy, and the sentence says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FEW_REPLIES = 20


def style_clause(style: Mapping[str, Any]) -> str:
    """What the style distances say, calibrated."""
    tuned, base, ceiling, floor = style["tuned"], style["base"], style["ceiling"], style["floor"]
    if tuned <= ceiling:
        return "its replies are as close to your style as your own texts are to each other"
    if tuned >= base:
        clause = "its replies are no closer to your style than the base model's"
    else:
        clause = "its replies are closer to your style than the base model's, but still further than your own texts are from each other"
    if floor is not None and tuned >= floor:
        clause += ", and further from it than other people's texts are"
    return clause


def loss_clause(loss: Mapping[str, float] | None) -> str | None:
    """What the held-out loss says, or None when the backend cannot score text."""
    if not loss:
        return None
    base, tuned = loss["base"], loss["tuned"]
    if tuned < base:
        return (
            f"predicts your held-out replies better than the base model ({tuned:.2f} against {base:.2f} nats per token)"
        )
    return f"does not predict your held-out replies better than the base model ({tuned:.2f} against {base:.2f} nats per token)"


def verdict(style: Mapping[str, Any], loss: Mapping[str, float] | None, replies: int) -> str:
    """The one sentence, also printed in the stage's summary line."""
    style_part, loss_part = style_clause(style), loss_clause(loss)
    if loss_part:
        sentence = f"On {replies} held-out replies, the tuned model {loss_part}, and {style_part}"
    else:
        sentence = f"On {replies} held-out replies, the tuned model's replies are " + style_part.removeprefix(
            "its replies are "
        )
    if replies < FEW_REPLIES:
        sentence += " (few replies: a rough indication)"
    return sentence + "."
