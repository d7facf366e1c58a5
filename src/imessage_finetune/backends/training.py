"""What the training loops that run here (`local`: PyTorch, `mlx`: MLX) share, so that both
train with the same semantics: the events they report, the learning-rate schedule, the
length-grouped batches, the sample the loss before and after is measured on, Ctrl-C
taken between steps, and whether this is Apple silicon (where each says which one trains).
Nothing here needs a framework.
"""

from __future__ import annotations

import platform
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from imessage_finetune.errors import Interrupted, TrainingError

WARMUP_SHARE = 0.05  # of all steps, with a linear rise, then a linear decay to 0
MAX_GRAD_NORM = 1.0
GROUP_BATCHES = 16  # batches whose examples are grouped by length (the order stays random)
LOSS_SAMPLE = 64  # training examples the before/after loss is measured on

T = TypeVar("T")


class TrainingInterrupted(TrainingError, Interrupted):
    """Ctrl-C stopped training after a step; a checkpoint was saved there."""


def interrupted(step: int, total: int) -> TrainingInterrupted:
    """The error a loop raises when Ctrl-C stopped it after `step`."""
    return TrainingInterrupted(
        f"training stopped at step {step} of {total}; a checkpoint was saved: run `doit train` again to resume from it"
    )


@dataclass(frozen=True)
class StepEvent:
    """One optimiser step: the loss of its batch (mean over the trained tokens)."""

    step: int
    total_steps: int
    epoch: int
    loss: float


@dataclass(frozen=True)
class TrainingResult:
    """How the run went: steps, where it resumed, and the loss before and after."""

    steps: int
    train_loss_start: float
    train_loss: float
    validation_loss_start: float | None
    validation_loss: float | None


def learning_rate_factor(step: int, total: int) -> float:
    """The share of the learning rate used at `step` (0-based) of `total`: a linear warm-up
    over WARMUP_SHARE of the steps, then a linear decay to 0."""
    warmup = max(1, round(total * WARMUP_SHARE))
    return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))


def group_by_length(order: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches of one epoch from a shuffled `order` of example indices: examples of
    similar length grouped within each run of GROUP_BATCHES batches, so little of a batch
    is padding, while which examples meet stays random."""
    group = batch_size * GROUP_BATCHES
    batches = []
    for start in range(0, len(order), group):
        similar = sorted(order[start : start + group], key=lambda i: (-lengths[i], i))
        batches += [similar[i : i + batch_size] for i in range(0, len(similar), batch_size)]
    return batches


def loss_sample(train: Sequence[T]) -> list[T]:
    """The training examples the loss before and after training is measured on (evenly spread)."""
    return list(train[:: max(1, len(train) // LOSS_SAMPLE)][:LOSS_SAMPLE])


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Hold a first Ctrl-C until the current step is done; a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    requested: list[bool] = []

    def handler(signum: int, frame: Any) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)


def on_apple_silicon() -> bool:
    """Whether this is a Mac with Apple silicon, where both backends train (MLX faster)."""
    return platform.system() == "Darwin" and platform.machine() == "arm64"
