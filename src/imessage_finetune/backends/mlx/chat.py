"""The MLX backend's `ChatModel`: the base model, with the trained adapter or without it,
answering (streamed, with the interface's generation settings) and scoring conversations.

Prompts are rendered as the training examples were (`ExampleBuilder.prompt_ids`: names as
prefixes, special tokens neutralised), and scores are the training loss on the same tokens
(the assistant's replies), so `evaluate` measures what training optimised.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from typing import Any

from ..examples import ExampleBuilder
from ..interface import Completion, GenerationSettings, Messages, Usage
from .trainer import mean_loss

SCORE_BATCH = 4


class MlxChatModel:
    """A loaded MLX model ready to answer (see `backends.interface.ChatModel`)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        model_id: str,
        system_prompt: str,
        max_seq_length: int,
        defaults: GenerationSettings = GenerationSettings(),
    ) -> None:
        model.eval()
        self.model = model
        self.tokenizer = tokenizer  # mlx-lm's TokenizerWrapper
        self.model_id = model_id
        self.system_prompt = system_prompt
        self.max_seq_length = max_seq_length
        self.defaults = defaults

    def stream(self, messages: Messages, settings: GenerationSettings | None = None) -> Completion:
        """The reply to `messages`, piece by piece (see `ChatModel.stream`); `settings` None
        is `chat`'s ([finetune.mlx] max_new_tokens, temperature, seed). A final assistant
        message is a reply begun: only its continuation is generated and yielded."""
        prompt = ExampleBuilder(self.tokenizer._tokenizer, self.max_seq_length).prompt_ids(messages)
        return MlxCompletion(self.model, self.tokenizer, prompt, settings or self.defaults)

    def score(self, conversations: Iterable[Messages]) -> float | None:
        """Mean loss in nats per token over the assistant replies of `conversations` (those
        tokens only, weight-0 replies excluded, as in training); None when no reply is left
        to score."""
        builder = ExampleBuilder(self.tokenizer._tokenizer, self.max_seq_length)
        examples = builder.build({"messages": [dict(m) for m in c]} for c in conversations)
        if not examples:
            return None
        return mean_loss(self.model, examples, SCORE_BATCH)


class MlxCompletion(Completion):
    """A reply being generated with mlx-lm's `generate_step`, one token at a time."""

    def __init__(self, model: Any, tokenizer: Any, prompt: Sequence[int], settings: GenerationSettings) -> None:
        self.usage = Usage(prompt_tokens=len(prompt), completion_tokens=0, finish_reason="length")
        self._pieces = self._generate(model, tokenizer, prompt, settings)

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating: the generator is closed, no further token is computed."""
        self._pieces.close()

    def _generate(
        self, model: Any, tokenizer: Any, prompt: Sequence[int], settings: GenerationSettings
    ) -> Generator[str, None, None]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step
        from mlx_lm.sample_utils import make_sampler

        if settings.max_tokens <= 0:
            return
        if settings.seed is not None:
            mx.random.seed(settings.seed)  # the same messages, settings and seed: the same reply
        sampler = make_sampler(temp=settings.temperature, top_p=settings.top_p)
        # The Hugging Face tokenizer decodes the whole reply at each token (a few hundred at
        # most): mlx-lm's streaming detokenizers drop a leading space, which a continued reply
        # may begin with.
        decode = tokenizer._tokenizer.decode
        generated: list[int] = []
        text, emitted = "", 0
        # Text that could be the start of a stop string is held back until it is not.
        hold = max((len(s) for s in settings.stop), default=1) - 1
        steps = generate_step(mx.array(list(prompt)), model, max_tokens=settings.max_tokens, sampler=sampler)
        try:
            for token, _ in steps:
                if token in tokenizer.eos_token_ids:
                    self.usage.finish_reason = "stop"
                    break
                self.usage.completion_tokens += 1
                generated.append(token)
                decoded = decode(generated, skip_special_tokens=True)
                if decoded.endswith("\ufffd"):  # a character still incomplete
                    continue
                text = decoded
                cut = _first_stop(text, settings.stop, max(0, emitted - hold))
                if cut is not None:
                    self.usage.finish_reason = "stop"
                    if cut > emitted:
                        yield text[emitted:cut]
                    return
                if len(text) - hold > emitted:
                    yield text[emitted : len(text) - hold]
                    emitted = len(text) - hold
        finally:
            steps.close()
        text = decode(generated, skip_special_tokens=True)
        cut = _first_stop(text, settings.stop, max(0, emitted - hold))
        if cut is not None:
            self.usage.finish_reason = "stop"
            text = text[:cut]
        if len(text) > emitted:
            yield text[emitted:]


def _first_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Where the first stop string in `text` (searched from `start`) begins, if any."""
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None
