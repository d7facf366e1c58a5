"""The MLX backend's `ChatModel`: the base model, with the trained adapter or without it,
answering (streamed, with the interface's generation settings) and scoring conversations.

Prompts are rendered as the training examples were (`ExampleBuilder.prompt_ids`: names as
prefixes, special tokens neutralised), and scores are the training loss on the same tokens
(the assistant's replies), so `evaluate` measures what training optimised.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import replace
from typing import Any

from imessage_finetune.backends.examples import ExampleBuilder
from imessage_finetune.backends.interface import Completion, GenerationSettings, Messages, Usage
from imessage_finetune.backends.mlx.trainer import mean_loss
from imessage_finetune.errors import ContextLengthExceeded

SCORE_BATCH = 4
TOP_P = 0.95  # `chat`'s nucleus (GenerationSettings' default too)


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
        defaults: GenerationSettings | None = None,
    ) -> None:
        model.eval()
        self.model = model
        self.tokenizer = tokenizer  # mlx-lm's TokenizerWrapper
        self.model_id = model_id
        self.system_prompt = system_prompt
        self.max_seq_length = max_seq_length
        self.defaults = defaults or GenerationSettings()
        positions = getattr(getattr(model, "args", None), "max_position_embeddings", None)
        limit = getattr(tokenizer._tokenizer, "model_max_length", None)
        self.context_length: int = (
            positions
            if isinstance(positions, int) and positions > 0
            else limit
            if isinstance(limit, int) and 0 < limit < 10**7
            else 4096
        )

    def default_settings(self) -> GenerationSettings:
        """`chat`'s settings: [finetune.mlx] max_new_tokens, temperature and seed."""
        return self.defaults

    def stream(self, messages: Messages, settings: GenerationSettings | None = None) -> Completion:
        """The reply to `messages`, piece by piece (see `ChatModel.stream`); `settings` None
        is `chat`'s. A final assistant message is a reply begun: only its continuation is
        generated and yielded. Raises when the conversation does not fit the model's context."""
        prompt = self._prompt(messages)
        settings = settings or self.defaults
        return MlxCompletion(self.model, self.tokenizer, prompt, settings, self.context_length - len(prompt))

    def count_tokens(self, messages: Messages) -> int:
        """How many tokens `messages` take as a prompt (with the generation prompt)."""
        return len(self._prompt(messages))

    def _prompt(self, messages: Messages) -> list[int]:
        prompt = ExampleBuilder(self.tokenizer._tokenizer, self.max_seq_length).prompt_ids(messages)
        if len(prompt) >= self.context_length:
            raise ContextLengthExceeded(
                f"the conversation takes {len(prompt)} tokens, and this model reads at most "
                f"{self.context_length}: send fewer or shorter messages"
            )
        return prompt

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

    def __init__(
        self, model: Any, tokenizer: Any, prompt: Sequence[int], settings: GenerationSettings, room: int
    ) -> None:
        self.usage = Usage(prompt_tokens=len(prompt), completion_tokens=0, finish_reason="length")
        # The reply ends where the context does: finish_reason "length".
        settings = replace(settings, max_tokens=min(settings.max_tokens, room))
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
        hf = tokenizer._tokenizer

        def decode(ids: list[int]) -> str:
            return str(hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

        stops = tuple(s for s in settings.stop if s)
        generated: list[int] = []
        text, emitted = "", 0
        steps = generate_step(mx.array(list(prompt)), model, max_tokens=settings.max_tokens, sampler=sampler)
        try:
            for token, _ in steps:
                if token in tokenizer.eos_token_ids:
                    self.usage.finish_reason = "stop"
                    break
                self.usage.completion_tokens += 1
                generated.append(int(token))
                text = decode(generated)
                cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    self.usage.finish_reason = "stop"
                    if cut > emitted:
                        yield text[emitted:cut]
                    return
                # Held back: a character whose bytes are not all there yet, and what may be the
                # start of a stop string.
                ready = len(text.rstrip("\ufffd"))
                ready -= _partial_stop(text[:ready], stops)
                if ready > emitted:
                    yield text[emitted:ready]
                    emitted = ready
        finally:
            steps.close()
        text = decode(generated)
        if len(text) > emitted:
            yield text[emitted:]


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of `text` that begins a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest
