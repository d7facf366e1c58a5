"""A LangChain chat model backed by the adapter the local backend trained.

    from imessage_finetune.langchain.chat_model import LocalChatModel
    llm = LocalChatModel.from_model_json("artifacts/model.json")
    llm.invoke("are you free tonight?").content

It runs on this machine (streaming included), with the system prompt the model was trained
with unless the messages bring their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, PrivateAttr

from imessage_finetune.backends import backend_for
from imessage_finetune.config import ArtifactsConfig, Config, FinetuneConfig, LocalConfig
from imessage_finetune.errors import TrainingError
from imessage_finetune.jsonio import load_json

ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class LocalChatModel(BaseChatModel):
    """The locally fine-tuned model as a LangChain `BaseChatModel`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model_json: dict[str, Any]
    artifacts_dir: Path
    base_dir: Path
    settings: LocalConfig
    _chat: Any = PrivateAttr(default=None)

    @classmethod
    def from_model_json(
        cls,
        path: str | Path = "artifacts/model.json",
        *,
        temperature: float = 0.7,
        max_new_tokens: int = 200,
        device: str = "auto",
        base_dir: str | Path | None = None,
    ) -> LocalChatModel:
        """Load the model a local `doit train` described in `path`.

        `base_dir` is what a relative base_model folder is relative to (default: the folder
        above the artifacts folder, where finetune.toml usually is).
        """
        path = Path(path).resolve()
        document = load_json(path.read_bytes())
        if document["backend"] != "local":
            raise TrainingError(
                f"{path} describes a model of the {document['backend']!r} backend; use "
                "langchain_openai.ChatOpenAI(model=...) for it"
            )
        settings = LocalConfig(
            base_model=document["base_model"],
            seed=document["seed"],
            device=device,  # type: ignore[arg-type]
            temperature=temperature,
            max_new_tokens=max_new_tokens,
        )
        return cls(
            model_json=document,
            artifacts_dir=path.parent,
            base_dir=Path(base_dir).resolve() if base_dir else path.parent.parent,
            settings=settings,
        )

    @property
    def _llm_type(self) -> str:
        return "imessage-finetune-local"

    def _messages(self, messages: list[BaseMessage]) -> list[dict[str, str]]:
        converted = [{"role": ROLES.get(m.type, "user"), "content": str(m.content)} for m in messages]
        prompt = self.model_json.get("system_prompt")
        if prompt and not any(m["role"] == "system" for m in converted):
            converted.insert(0, {"role": "system", "content": prompt})
        return converted

    def _pieces(self, messages: list[BaseMessage]) -> Iterator[str]:
        if self._chat is None:
            config = Config(
                base_dir=self.base_dir,
                artifacts=ArtifactsConfig(dir=str(self.artifacts_dir)),
                finetune=FinetuneConfig(backend=self.model_json["backend"], local=self.settings),
            )
            self._chat = backend_for(config).load(self.model_json)
        return self._chat.stream(self._messages(messages))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = "".join(self._pieces(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in self._pieces(messages):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
