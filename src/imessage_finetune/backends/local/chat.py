"""Replies from the trained adapter (or the base model alone), streamed as they are
generated, and the loss of given conversations under it: the local backend's `ChatModel`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.backends.interface import Completion, GenerationSettings, Messages, Usage
from imessage_finetune.backends.local import base_model, quiet_libraries, require, resolve_device
from imessage_finetune.config import LocalConfig
from imessage_finetune.errors import TrainingError


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

    def default_settings(self) -> GenerationSettings:
        """`chat`'s settings from [finetune.local] (max_new_tokens, temperature, seed)."""
        return GenerationSettings(
            max_tokens=self.settings.max_new_tokens, temperature=self.settings.temperature, seed=self.settings.seed
        )

    def stream(self, messages: Messages, settings: GenerationSettings | None = None) -> Completion:
        """The reply to `messages` (OpenAI chat form), piece by piece as it is generated;
        `usage` is filled once it is exhausted. Sampling is seeded by `settings.seed`, so
        the same prompt and settings give the same reply. A final assistant message is a
        reply begun, which is continued (only the continuation is yielded)."""
        return _Generation(self, messages, settings or self.default_settings())

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


class _Generation(Completion):
    """One reply being generated in a worker thread, read piece by piece."""

    def __init__(self, chat: LocalChat, messages: Messages, settings: GenerationSettings) -> None:
        self.usage = Usage()
        self._chat, self._messages, self._settings = chat, messages, settings
        self._pieces: Iterator[str] | None = None
        self._stopped = threading.Event()

    def __next__(self) -> str:
        if self._pieces is None:
            self._pieces = self._generate()
        return next(self._pieces)

    def close(self) -> None:
        """Stop generating: the worker stops after the token in progress."""
        self._stopped.set()
        if self._pieces is not None:
            for _ in self._pieces:  # drain what was already decoded, and join the worker
                pass

    def _generate(self) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        chat, settings, stopped = self._chat, self._settings, self._stopped

        class Closed(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stopped.is_set(), dtype=torch.bool, device=input_ids.device)

        messages = [dict(m) for m in self._messages]
        # A final assistant message is a reply begun: the model continues it.
        begun = bool(messages) and messages[-1].get("role") == "assistant"
        encoded = chat.tokenizer.apply_chat_template(
            messages,
            add_generation_prompt=not begun,
            continue_final_message=begun,
            return_tensors="pt",
            return_dict=True,
        ).to(chat.device)
        prompt_tokens = int(encoded["input_ids"].shape[1])
        streamer = TextIteratorStreamer(chat.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = settings.temperature > 0
        options: dict[str, Any] = {
            **encoded,
            "streamer": streamer,
            "max_new_tokens": settings.max_tokens,
            "do_sample": sampling,
            "pad_token_id": chat.tokenizer.pad_token_id,
            "stopping_criteria": StoppingCriteriaList([Closed()]),
        }
        if sampling:
            options.update(temperature=settings.temperature, top_p=settings.top_p)
        failure: list[BaseException] = []
        output: list[Any] = []

        def generate() -> None:
            try:
                with torch.no_grad():
                    output.append(chat.model.generate(**options))
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        for piece in streamer:
            if piece and not stopped.is_set():
                yield piece
        worker.join()
        if failure:
            raise failure[0]
        generated = output[0][0][prompt_tokens:].tolist() if output else []
        self.usage.prompt_tokens = prompt_tokens
        self.usage.completion_tokens = len(generated)
        ended = bool(generated) and generated[-1] in _end_tokens(chat.tokenizer, chat.model)
        self.usage.finish_reason = "length" if len(generated) >= settings.max_tokens and not ended else "stop"


def _end_tokens(tokenizer: Any, model: Any) -> set[int]:
    """The token ids that end a turn (the tokenizer's and the generation config's)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return {i for i in ids if i is not None}
