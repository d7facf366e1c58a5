"""Replies from the trained adapter, streamed as they are generated."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from imessage_finetune import artifacts
from imessage_finetune.config import LocalConfig
from imessage_finetune.errors import FineTuneError

from imessage_finetune.backends.local import base_model, quiet_libraries, require, resolve_device


class LocalChat:
    """The base model with the adapter of a local model.json, ready to answer."""

    def __init__(self, model_json: Mapping[str, Any], artifacts_dir: Path, base_dir: Path, settings: LocalConfig) -> None:
        require()
        quiet_libraries()
        from peft import PeftModel

        self.settings = settings
        self.device = resolve_device(settings.device)
        source = base_model.locate(model_json["base_model"], base_dir, artifacts_dir)
        # The Hub commit the adapter was trained on, not whatever the cache holds now.
        model, self.tokenizer, _ = base_model.load(source, self.device, model_json.get("base_model_revision"))
        adapter = artifacts_dir / model_json["adapter_path"]
        if not all((adapter / name).is_file() for name in artifacts.ADAPTER_FILES):
            raise FineTuneError(
                f"the trained adapter is missing from {adapter}: run `imessage-finetune run train` "
                "to train it again"
            )
        self.model = PeftModel.from_pretrained(model, str(adapter)).to(self.device).eval()

    def stream(self, messages: Sequence[Mapping[str, str]]) -> Iterator[str]:
        """The reply to `messages` (OpenAI chat form), piece by piece as it is generated."""
        import torch
        from transformers import TextIteratorStreamer

        encoded = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = self.settings.temperature > 0
        options: dict[str, Any] = {
            **encoded,
            "streamer": streamer,
            "max_new_tokens": self.settings.max_new_tokens,
            "do_sample": sampling,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling:
            options.update(temperature=self.settings.temperature, top_p=0.95)
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.no_grad():
                    self.model.generate(**options)
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        # The same prompt gives the same reply: sampling is seeded.
        torch.manual_seed(self.settings.seed)
        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        for piece in streamer:
            if piece:
                yield piece
        worker.join()
        if failure:
            raise failure[0]

