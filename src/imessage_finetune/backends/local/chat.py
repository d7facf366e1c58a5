"""Replies from the trained adapter (or the base model alone), streamed as they are
generated, and the loss of given conversations under it: the local backend's `ChatModel`.

`LocalChat.stream` returns a `LocalCompletion` (the interface's `Completion`): the reply's
text pieces, then `usage` (prompt and completion tokens, finish reason). Generation runs in
a thread that a `StoppingCriteria` stops between two tokens: at a stop string, or when the
consumer calls `close()` (a client that went away), so tokens nobody reads are never
computed. The consumer decodes the generated tokens itself, so the text it yields is exactly
`tokenizer.decode` of the whole reply, cut before the first stop string. A final assistant
message is a reply begun, which is continued.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.backends.interface import Completion, GenerationSettings, Messages, Usage
from imessage_finetune.backends.local import base_model, quiet_libraries, require, resolve_device
from imessage_finetune.config import LocalConfig
from imessage_finetune.errors import ContextLengthExceeded, TrainingError

TOP_P = 0.95  # `chat`'s nucleus when none is asked for (GenerationSettings' default too)


class LocalChat:
    """The base model with the adapter of a local model.json (`tuned`), or the base model
    alone, ready to answer and to score."""

    def __init__(
        self,
        model_json: Mapping[str, Any],
        artifacts_dir: Path,
        base_dir: Path,
        settings: LocalConfig,
        *,
        tuned: bool = True,
    ) -> None:
        require()
        quiet_libraries()
        from peft import PeftModel

        self.settings = settings
        self.device = resolve_device(settings.device)
        self.model_id = model_json["model_id"] if tuned else model_json["base_model"]
        self.system_prompt = model_json.get("system_prompt") or ""
        self.max_seq_length = model_json.get("hyperparameters", {}).get("max_seq_length", settings.max_seq_length)
        source = base_model.locate(model_json["base_model"], base_dir, artifacts_dir)
        # The Hub commit the adapter was trained on, not whatever the cache holds now.
        model, self.tokenizer, _ = base_model.load(source, self.device, model_json.get("base_model_revision"))
        if tuned:
            adapter = artifacts_dir / model_json["adapter_path"]
            if not all((adapter / name).is_file() for name in artifacts.ADAPTER_FILES):
                raise TrainingError(
                    f"the trained adapter is missing from {adapter}: run `imessage-finetune run train` "
                    "to train it again"
                )
            model = PeftModel.from_pretrained(model, str(adapter))
        self.model = model.to(self.device).eval()
        self.context_length = _context_length(model.config, self.tokenizer)
        self._special = sorted(
            {t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special}
            | set(self.tokenizer.all_special_tokens),
            key=len,
            reverse=True,
        )

    def default_settings(self) -> GenerationSettings:
        """`chat`'s settings from [finetune.local] (max_new_tokens, temperature, seed)."""
        return GenerationSettings(
            max_tokens=self.settings.max_new_tokens,
            temperature=self.settings.temperature,
            top_p=TOP_P,
            seed=self.settings.seed,
        )

    def stream(self, messages: Messages, settings: GenerationSettings | None = None) -> LocalCompletion:
        """The reply to `messages` (OpenAI chat form), piece by piece as it is generated;
        `usage` is filled once it is exhausted. Sampling is seeded by `settings.seed`, so
        the same prompt and settings give the same reply. ContextLengthExceeded when the
        conversation does not fit the model's context."""
        return LocalCompletion(self, self._encode(messages), settings or self.default_settings())

    def count_tokens(self, messages: Messages) -> int:
        """How many tokens `messages` take as a prompt (with the generation prompt)."""
        return len(self._encode(messages)["input_ids"][0])

    def _encode(self, messages: Messages) -> Any:
        """The prompt in the form the model was trained on: senders' names as a prefix,
        consecutive messages of one role joined, special tokens in the text neutralised (so a
        message cannot open or close a turn)."""
        from imessage_finetune.backends.examples import ExampleStats, to_turns

        turns = to_turns(messages, self._special, ExampleStats())
        # A final assistant message is a reply begun: it is continued (the interface's rule).
        begun = bool(turns) and turns[-1].role == "assistant"
        encoded = self.tokenizer.apply_chat_template(
            [{"role": t.role, "content": t.content} for t in turns],
            add_generation_prompt=not begun,
            continue_final_message=begun,
            return_tensors="pt",
            return_dict=True,
        )
        length = int(encoded["input_ids"].shape[1])
        if length >= self.context_length:
            raise ContextLengthExceeded(
                f"the conversation takes {length} tokens, and this model reads at most "
                f"{self.context_length}: send fewer or shorter messages"
            )
        return encoded.to(self.device)

    def score(self, conversations: Iterable[Messages]) -> float | None:
        """Mean loss in nats per token over the assistant turns of `conversations`, rendered
        with the model's chat template as in training (None when no assistant token is left)."""
        from imessage_finetune.backends.examples import ExampleBuilder
        from imessage_finetune.backends.local.trainer import mean_loss

        builder = ExampleBuilder(self.tokenizer, self.max_seq_length)
        examples = builder.build({"messages": [dict(m) for m in c]} for c in conversations)
        if not examples:
            return None
        return mean_loss(self.model, examples, 4, self.tokenizer.pad_token_id, self.device)


class LocalCompletion(Completion):
    """One reply being generated by a `LocalChat` (see the module's docstring)."""

    def __init__(self, chat: LocalChat, encoded: Any, settings: GenerationSettings) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        self.usage = Usage(prompt_tokens=int(encoded["input_ids"].shape[1]))
        self._tokenizer = chat.tokenizer
        self._stop = tuple(s for s in settings.stop if s)
        self._closed = threading.Event()
        self._tokens: queue.Queue[list[int] | None] = queue.Queue()
        self._failure: list[BaseException] = []
        # The reply ends where the context does: finish_reason "length".
        self._max_tokens = min(settings.max_tokens, chat.context_length - int(encoded["input_ids"].shape[1]))
        self._eos = _end_tokens(chat.model, chat.tokenizer)
        prompt_length = self.usage.prompt_tokens
        completion = self

        class Tokens(BaseStreamer):
            """Receives each new token from generate(); the first call is the prompt."""

            prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                completion._tokens.put([int(t) for t in value.reshape(-1).tolist()])

            def end(self) -> None:
                completion._tokens.put(None)

        class Halt(StoppingCriteria):
            """Stops between two tokens once closed, or when the reply holds a stop string:
            checked here, in generate's thread, so the reply ends at the same token whatever
            the consumer's pace (usage is then the same on every run)."""

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                done = completion._closed.is_set()
                if not done and completion._stop:
                    text = completion._decode(input_ids[0, prompt_length:].tolist())
                    done = any(s in text for s in completion._stop)
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        sampling = settings.temperature > 0 and settings.top_p > 0  # else greedy
        options: dict[str, Any] = {
            **encoded,
            "streamer": Tokens(),
            "stopping_criteria": StoppingCriteriaList([Halt()]),
            "max_new_tokens": self._max_tokens,
            "do_sample": sampling,
            "pad_token_id": chat.tokenizer.pad_token_id,
        }
        if sampling:
            options.update(temperature=settings.temperature, top_p=settings.top_p)

        def generate() -> None:
            try:
                with torch.no_grad():
                    # The same prompt, settings and seed give the same reply. (The generator is
                    # global: the callers generate one reply at a time.)
                    if settings.seed is not None:
                        torch.manual_seed(settings.seed)
                    chat.model.generate(**options)
            except BaseException as exc:  # re-raised in the consumer's thread
                completion._failure.append(exc)
                completion._tokens.put(None)

        self._pieces = self._read()
        self._worker = threading.Thread(target=generate, name="generate", daemon=True)
        self._worker.start()

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating at the next token; the iteration then ends."""
        self._closed.set()

    def _read(self) -> Iterator[str]:
        ids: list[int] = []
        sent = 0
        while True:
            batch = self._tokens.get()
            if batch is None:
                break
            ids += batch
            text = self._decode(ids)
            cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
            if cut >= 0:
                self.usage.finish_reason = "stop"
                self.close()
                if cut > sent:
                    yield text[sent:cut]
                sent = -1
                break
            # Hold back what may still change: a character whose bytes are not all there yet,
            # and the start of a stop string.
            ready = len(text.rstrip("\ufffd"))
            ready -= _partial_stop(text[:ready], self._stop)
            if ready > sent:
                yield text[sent:ready]
                sent = ready
        self._worker.join()
        if self._failure:
            raise self._failure[0]
        self.usage.completion_tokens = len(ids)
        if sent >= 0:
            text = self._decode(ids)
            if len(text) > sent:
                yield text[sent:]
            ended = bool(ids) and ids[-1] in self._eos
            self.usage.finish_reason = "length" if len(ids) >= self._max_tokens and not ended else "stop"


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of `text` that begins a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest


def _context_length(config: Any, tokenizer: Any) -> int:
    """The longest sequence the model reads: its positions, or the tokenizer's limit."""
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**7 else 4096


def _end_tokens(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end a reply: the generation config's end tokens and the tokenizer's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ends = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ends.add(tokenizer.eos_token_id)
    return ends
