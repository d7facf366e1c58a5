"""The training loop: LoRA on the base model, one optimiser step per batch, resumable.

Everything that decides the result comes from the seed: the adapter's initial weights, the
order of the examples in each epoch (a permutation seeded by seed and epoch), dropout. A
checkpoint holds the adapter, the optimiser and schedule, and the random state, so a run
resumed from step k ends with the same weights as one that never stopped.

Ctrl-C is taken between steps: the step in progress finishes, a checkpoint is saved and
TrainingInterrupted says how to resume. A second Ctrl-C stops at once (the previous
checkpoint stays).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from imessage_finetune.backends.examples import IGNORE, TokenizedExample
from imessage_finetune.backends.local.checkpoints import CheckpointStore
from imessage_finetune.backends.training import (
    MAX_GRAD_NORM,
    StepEvent,
    TrainingInterrupted,
    TrainingResult,
    deferred_interrupt,
    group_by_length,
    interrupted,
    learning_rate_factor,
    loss_sample,
)
from imessage_finetune.config import LocalConfig
from imessage_finetune.errors import TrainingError

# Re-exported: callers and tests know them from here.
__all__ = [
    "StepEvent",
    "TrainingInterrupted",
    "TrainingResult",
    "epoch_batches",
    "loss_sample",
    "mean_loss",
    "train_adapter",
]


@contextmanager
def _deterministic_algorithms() -> Iterator[None]:
    """PyTorch's deterministic kernels while training, the caller's setting restored after."""
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


@_deterministic_algorithms()
def train_adapter(
    model: Any,
    train: Sequence[TokenizedExample],
    validation: Sequence[TokenizedExample],
    settings: LocalConfig,
    *,
    pad_token_id: int,
    device: str,
    store: CheckpointStore,
    run_id: str,
    on_start: Callable[[int], None] | None = None,
    on_event: Callable[[StepEvent], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
) -> tuple[Any, TrainingResult]:
    """Train a LoRA adapter on `train`; return the adapted model and how it went.

    `on_start` gets the number of steps, `on_event` each step, `on_resume` the step a
    checkpoint resumed at and the number of steps.
    """
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    torch.manual_seed(settings.seed)
    if settings.gradient_checkpointing:
        # Non-reentrant: frozen inputs need no grad hack, and dropout is replayed exactly.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:  # peft: no module matches target_modules
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise TrainingError(
            f"[finetune.local] target_modules {settings.target_modules!r} do not fit this model ({exc}); "
            f'use "all-linear" or some of its linear layers: {", ".join(linear)}'
        ) from None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / settings.batch_size)  # the last batch may be smaller
    total = per_epoch * settings.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, total))
    sample = loss_sample(train)
    if on_start is not None:
        on_start(total)

    def evaluate(examples: Sequence[TokenizedExample]) -> float:
        return mean_loss(model, examples, settings.batch_size, pad_token_id, device)

    checkpoint = store.load(run_id)
    if checkpoint is None:
        store.clear()
        start = 0
        baseline: dict[str, Any] = {
            "train": evaluate(sample),
            "validation": evaluate(validation) if validation else None,
        }
    else:
        set_peft_model_state_dict(model, checkpoint.adapter)
        optimizer.load_state_dict(checkpoint.state["optimizer"])
        schedule.load_state_dict(checkpoint.state["schedule"])
        _set_rng_state(checkpoint.state["rng"], device)
        start, baseline = checkpoint.step, checkpoint.state["baseline"]
        if on_resume is not None:
            on_resume(start, total)

    def save(step: int) -> None:
        state = {
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": _rng_state(device),
            "baseline": baseline,
        }
        store.save(run_id, step, get_peft_model_state_dict(model), state)

    model.train()
    batches: tuple[int, list[list[int]]] = (-1, [])
    with deferred_interrupt() as stop_requested:
        for step in range(start, total):
            epoch, index = divmod(step, per_epoch)
            if batches[0] != epoch:
                batches = (
                    epoch,
                    epoch_batches([len(e.input_ids) for e in train], settings.batch_size, settings.seed, epoch),
                )
            batch = [train[i] for i in batches[1][index]]
            loss = _batch_loss(model, batch, pad_token_id, device)
            loss.backward()
            loss = loss.detach()
            torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if on_event is not None:
                on_event(StepEvent(step + 1, total, epoch + 1, round(loss.item(), 4)))
            if stop_requested() and step + 1 < total:
                save(step + 1)
                raise interrupted(step + 1, total)
            if (step + 1) % settings.checkpoint_steps == 0 and step + 1 < total:
                save(step + 1)
    result = TrainingResult(
        steps=total,
        train_loss_start=round(baseline["train"], 4),
        train_loss=round(evaluate(sample), 4),
        validation_loss_start=None if baseline["validation"] is None else round(baseline["validation"], 4),
        validation_loss=round(evaluate(validation), 4) if validation else None,
    )
    return model, result


def mean_loss(
    model: Any, examples: Sequence[TokenizedExample], batch_size: int, pad_token_id: int, device: str
) -> float:
    """The loss per trained token over `examples`, without dropout or gradients."""
    import torch

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            total += float(_batch_loss(model, batch, pad_token_id, device, "sum"))
            tokens += sum(label != IGNORE for e in batch for label in e.labels[1:])
    model.train(was_training)
    return total / max(tokens, 1)


def _batch_loss(
    model: Any, batch: Sequence[TokenizedExample], pad_token_id: int, device: str, reduction: str = "mean"
) -> Any:
    """Cross-entropy of each next token, over the trained tokens only."""
    import torch

    ids, labels, mask = _collate(batch, pad_token_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction=reduction
    )


def _rng_state(device: str) -> dict[str, Any]:
    """The random state dropout draws from: the CPU's, and the accelerator's if one trains."""
    import torch

    state = {"cpu": torch.get_rng_state()}
    if device == "cuda":
        state["cuda"] = torch.cuda.get_rng_state()
    elif device == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any], device: str) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if device == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
    elif device == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch, as indices: a seeded shuffle, then examples of similar length
    grouped within each run of GROUP_BATCHES batches, so little of a batch is padding."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return group_by_length(torch.randperm(len(lengths), generator=generator).tolist(), lengths, batch_size)


def _collate(batch: Sequence[TokenizedExample], pad_token_id: int, device: str) -> tuple[Any, Any, Any]:
    import torch

    shape = (len(batch), max(len(e.input_ids) for e in batch))
    ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    for row, example in enumerate(batch):
        length = len(example.input_ids)
        ids[row, :length] = torch.frombuffer(example.input_ids, dtype=torch.int32)
        labels[row, :length] = torch.frombuffer(example.labels, dtype=torch.int32)
        mask[row, :length] = 1
    return ids.to(device), labels.to(device), mask.to(device)
