"""The LangChain chat model over a locally trained adapter: messages in the trained form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from imessage_finetune.langchain.chat_model import LocalChatModel
from imessage_finetune.errors import TrainingError


def model_json(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "artifacts" / "model.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"backend": "local", "base_model": "demo", "seed": 7, "system_prompt": "You are me.", **fields}))
    return path


def test_the_training_system_prompt_comes_first_unless_the_caller_gives_one(tmp_path: Path) -> None:
    llm = LocalChatModel.from_model_json(model_json(tmp_path), temperature=0.0)
    history = [HumanMessage("hi"), AIMessage("hey"), HumanMessage("free tonight?")]
    assert llm._messages(history) == [
        {"role": "system", "content": "You are me."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey"},
        {"role": "user", "content": "free tonight?"},
    ]
    assert llm._messages([SystemMessage("Be brief."), HumanMessage("hi")])[0] == {"role": "system", "content": "Be brief."}
    assert llm.settings.seed == 7 and llm.settings.temperature == 0.0
    assert llm.base_dir == tmp_path.resolve()


def test_a_remote_model_json_points_to_chatopenai(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="langchain_openai.ChatOpenAI"):
        LocalChatModel.from_model_json(model_json(tmp_path, backend="openai"))
