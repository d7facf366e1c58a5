"""The MLX training loop: LoRA on the base model (QLoRA when it is quantized), resumable.

The loop is the torch backend's, rule for rule (`backends.training`): AdamW with bias
correction and no weight decay, a 5 % linear warm-up then a linear decay to 0, gradients
clipped to norm 1, batches of similar length from a seeded shuffle per epoch, the loss the
mean over the trained tokens of the batch (the AI side's replies: `backends.examples`), the
loss before and after on the same sample, Ctrl-C taken between steps.

It is built from mlx-lm's parts (its LoRA layers, so the adapter is in mlx-lm's format and
mlx-lm's own tools load and fuse it) but not mlx-lm's `train()`, which masks nothing but a
prompt prefix, prints, and saves no optimiser state to resume from.

Everything that decides the result comes from the seed: the adapter's initial weights, the
order of the examples in each epoch, and dropout, reseeded at every step from the seed and
the step, so a run resumed from a checkpoint (adapter and optimiser state) ends with the same
weights as one that never stopped. On the CPU that holds byte for byte (the tests check it);
on a Mac's GPU it has not been checked here (no Mac).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from imessage_finetune.backends.examples import IGNORE, TokenizedExample
from imessage_finetune.backends.mlx.checkpoints import CheckpointStore
from imessage_finetune.backends.training import (
    MAX_GRAD_NORM,
    StepEvent,
    TrainingResult,
    deferred_interrupt,
    group_by_length,
    interrupted,
    learning_rate_factor,
    loss_sample,
)
from imessage_finetune.config import MlxConfig

# Batches are padded to a multiple of this many tokens: each new shape makes mx.compile
# trace the step again, so a few shapes are much faster than one per batch.
PAD_MULTIPLE = 32


def add_lora(model: Any, settings: MlxConfig) -> dict[str, Any]:
    """Freeze `model` and put LoRA layers (seeded) on the linear layers of its last
    `settings.layers` blocks (-1: all); return the adapter config mlx-lm saves beside them."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers

    layers = len(model.layers) if settings.layers == -1 else min(settings.layers, len(model.layers))
    parameters = {
        "rank": settings.lora_rank,
        "scale": settings.lora_alpha / settings.lora_rank,  # peft's scaling: alpha / rank
        "dropout": settings.lora_dropout,
    }
    model.freeze()
    mx.random.seed(settings.seed)
    linear_to_lora_layers(model, layers, parameters)
    for _, module in model.named_modules():
        if hasattr(module, "lora_a") and hasattr(module, "dropout"):
            module.dropout = _block_dropout_class()(settings.lora_dropout)
    return {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": parameters}


def train_adapter(
    model: Any,
    train: Sequence[TokenizedExample],
    validation: Sequence[TokenizedExample],
    settings: MlxConfig,
    *,
    store: CheckpointStore,
    run_id: str,
    on_start: Callable[[int], None] | None = None,
    on_event: Callable[[StepEvent], None] | None = None,
    on_resume: Callable[[int, int], None] | None = None,
) -> TrainingResult:
    """Train the LoRA layers `add_lora` put on `model`, in place; return how it went.

    `on_start` gets the number of steps, `on_event` each step, `on_resume` the step a
    checkpoint resumed at and the number of steps.
    """
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_map_with_path

    per_epoch = math.ceil(len(train) / settings.batch_size)  # the last batch may be smaller
    total = per_epoch * settings.epochs
    optimizer = optim.AdamW(learning_rate=settings.learning_rate, weight_decay=0.0, bias_correction=True)
    optimizer.init(model.trainable_parameters())
    sample = loss_sample(train)
    if on_start is not None:
        on_start(total)

    checkpoint = store.load(run_id)
    baseline: dict[str, Any]
    if checkpoint is None:
        store.clear()
        start = 0
        baseline = {
            "train": mean_loss(model, sample, settings.batch_size),
            "validation": mean_loss(model, validation, settings.batch_size) if validation else None,
        }
    else:
        model.load_weights(list(checkpoint.adapter.items()), strict=False)
        optimizer.state = tree_map_with_path(lambda path, _: checkpoint.optimizer[path], optimizer.state)
        start, baseline = checkpoint.step, checkpoint.state["baseline"]
        if on_resume is not None:
            on_resume(start, total)

    def save(step: int) -> None:
        store.save(
            run_id,
            step,
            dict(tree_flatten(model.trainable_parameters())),
            dict(tree_flatten(optimizer.state)),
            {"baseline": baseline},
        )

    loss_and_grad = nn.value_and_grad(model, _loss)
    # The compiled step reads and updates these; the optimiser's state must be final (restored)
    # before this point, as compile keeps the objects it is given.
    state = [model.state, optimizer.state, mx.random.state]

    def step_function(ids: Any, mask: Any) -> Any:
        (loss, _), grads = loss_and_grad(model, ids, mask)
        grads, _ = optim.clip_grad_norm(grads, MAX_GRAD_NORM)
        optimizer.update(model, grads)
        return loss

    compiled = mx.compile(step_function, inputs=state, outputs=state)
    model.train()
    batches: tuple[int, list[list[int]]] = (-1, [])
    with _blocks(model, settings.gradient_checkpointing), deferred_interrupt() as stop_requested:
        for step in range(start, total):
            epoch, index = divmod(step, per_epoch)
            if batches[0] != epoch:
                lengths = [len(e.input_ids) for e in train]
                batches = (epoch, epoch_batches(lengths, settings.batch_size, settings.seed, epoch))
            ids, mask = _collate([train[i] for i in batches[1][index]])
            optimizer.learning_rate = settings.learning_rate * learning_rate_factor(step, total)
            mx.random.seed(_step_seed(settings.seed, step))  # dropout: the same on a resumed run
            loss = compiled(ids, mask)
            mx.eval(state, loss)
            if on_event is not None:
                on_event(StepEvent(step + 1, total, epoch + 1, round(loss.item(), 4)))
            if stop_requested() and step + 1 < total:
                save(step + 1)
                raise interrupted(step + 1, total)
            if (step + 1) % settings.checkpoint_steps == 0 and step + 1 < total:
                save(step + 1)
    return TrainingResult(
        steps=total,
        train_loss_start=round(baseline["train"], 4),
        train_loss=round(mean_loss(model, sample, settings.batch_size), 4),
        validation_loss_start=None if baseline["validation"] is None else round(baseline["validation"], 4),
        validation_loss=round(mean_loss(model, validation, settings.batch_size), 4) if validation else None,
    )


def mean_loss(model: Any, examples: Sequence[TokenizedExample], batch_size: int) -> float:
    """The loss per trained token over `examples`, without dropout."""
    import mlx.core as mx

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, count = _loss(model, *_collate(examples[start : start + batch_size]))
        mx.eval(loss, count)
        total += loss.item() * count.item()
        tokens += int(count.item())
    model.train(was_training)
    return total / max(tokens, 1)


def _loss(model: Any, ids: Any, mask: Any) -> tuple[Any, Any]:
    """Cross-entropy of each next token, averaged over the trained tokens; and their number."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(ids[:, :-1]).astype(mx.float32)
    trained = mask[:, 1:]
    count = trained.sum()
    loss = (nn.losses.cross_entropy(logits, ids[:, 1:]) * trained).sum() / mx.maximum(count, 1)
    return loss, count


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch, as indices: a shuffle seeded by seed and epoch (NumPy's
    PCG64, the same on every machine), grouped by length as the torch backend does."""
    import numpy as np

    order = np.random.default_rng((seed * 1_000_003 + epoch) % 2**63).permutation(len(lengths)).tolist()
    return group_by_length(order, lengths, batch_size)


def _step_seed(seed: int, step: int) -> int:
    return ((seed % 2**32) << 32) | step


def _collate(batch: Sequence[TokenizedExample]) -> tuple[Any, Any]:
    """Token ids (right-padded, 0) and a 0/1 mask of the trained tokens, as MLX arrays."""
    import mlx.core as mx
    import numpy as np

    width = max(len(e.input_ids) for e in batch)
    width = PAD_MULTIPLE * math.ceil(width / PAD_MULTIPLE)
    ids = np.zeros((len(batch), width), np.int32)
    mask = np.zeros((len(batch), width), np.float32)
    for row, example in enumerate(batch):
        length = len(example.input_ids)
        ids[row, :length] = np.frombuffer(example.input_ids, dtype=np.int32)
        mask[row, :length] = np.frombuffer(example.labels, dtype=np.int32) != IGNORE
    return mx.array(ids), mx.array(mask)


_BLOCK_KEYS: list[Iterator[Any]] = []  # the random keys of the block being computed, innermost last


@functools.cache
def _block_dropout_class() -> Any:
    """The class of LoRA's dropout while training here (built on first use: mlx is optional)."""
    import mlx.core as mx
    import mlx.nn as nn

    class BlockDropout(nn.Module):
        """LoRA's dropout, its masks drawn from the keys of the transformer block it is in
        (`_blocks`), not from MLX's global random state: recomputing a block for gradient
        checkpointing then draws the very same masks. (mlx-lm's checkpointing, with its
        default dropout of 0, never meets this; with dropout, the recomputed masks would
        differ from the forward pass's and the gradients would be wrong.)"""

        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def __call__(self, x: Any) -> Any:
            if self.p == 0 or not self.training:
                return x
            key = next(_BLOCK_KEYS[-1]) if _BLOCK_KEYS else None
            keep = mx.random.bernoulli(1 - self.p, x.shape, key=key)
            return (keep * x) * (1 / (1 - self.p))

    return BlockDropout


@contextmanager
def _blocks(model: Any, checkpointing: bool) -> Iterator[None]:
    """While training, each transformer block draws one random key from MLX's state and
    gives its dropouts keys split from it; with `checkpointing`, each block's activations are
    recomputed in the backward pass instead of kept (mlx-lm's way: the block class's
    `__call__` goes through mx.checkpoint). The classes are restored after training, so
    nothing else in this process (chat, another model) is affected."""
    import mlx.core as mx

    dropout = _block_dropout_class()
    originals = {block: block.__call__ for block in {type(layer) for layer in model.layers}}

    def wrap(original: Any) -> Any:
        def call(layer: Any, *args: Any, **kwargs: Any) -> Any:
            dropouts = sum(1 for _, m in layer.named_modules() if isinstance(m, dropout) and m.p > 0)
            if not layer.training or (not dropouts and not checkpointing):
                return original(layer, *args, **kwargs)
            key = mx.random.randint(0, 2**31 - 1, (2,), dtype=mx.uint32) if dropouts else None

            def inner(parameters: Any, *args: Any, **kwargs: Any) -> Any:
                if checkpointing:
                    layer.update(parameters)
                _BLOCK_KEYS.append(iter(mx.random.split(key, num=dropouts)) if key is not None else iter(()))
                try:
                    return original(layer, *args, **kwargs)
                finally:
                    _BLOCK_KEYS.pop()

            if checkpointing:
                return mx.checkpoint(inner)(layer.trainable_parameters(), *args, **kwargs)
            return inner(None, *args, **kwargs)

        return call

    for block, original in originals.items():
        block.__call__ = wrap(original)
    try:
        yield
    finally:
        for block, original in originals.items():
            block.__call__ = original
