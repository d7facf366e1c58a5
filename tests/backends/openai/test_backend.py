"""The openai backend through `backend_for`: the fine-tuned model (or its base) at the
service as a ChatModel, streamed with settings and usage; no score, no export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_openai import API_KEY, FakeOpenAI
from imessage_finetune.backends import backend_for
from imessage_finetune.backends.interface import GenerationSettings
from imessage_finetune.backends.openai.client import OpenAIClient
from imessage_finetune.backends.openai.service import follow_job
from imessage_finetune.config import config_from_dict
from imessage_finetune.errors import ConfigError, ServiceError


def test_the_model_at_the_service_streams_with_settings_and_usage(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = OpenAIClient(API_KEY, fake_openai.base_url, strict=True)
    path = tmp_path / "train.jsonl"
    line = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]}
    path.write_text((json.dumps(line) + "\n") * 10)
    remote, _ = client.find_or_upload(path, "train-x.jsonl")
    job = client.create_job(training_file=remote.id, validation_file=None, model="gpt-4o-mini-2024-07-18",
                            suffix=None, hyperparameters={}, seed=1, metadata={"pipeline": "x"})
    fine_tuned = follow_job(client, job.id, deadline=30, poll_interval=0).fine_tuned_model
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    config = config_from_dict({"finetune": {"backend": "openai", "base_url": fake_openai.base_url}}, base_dir=tmp_path)
    backend = backend_for(config)
    assert (backend.name, backend.sends_data) == ("openai", True)
    document = {"backend": "openai", "model_id": fine_tuned, "base_model": "gpt-4o-mini-2024-07-18"}

    model = backend.load({**document, "system_prompt": "You are me."})
    assert (model.model_id, model.system_prompt) == (fine_tuned, "You are me.")
    reply = model.stream([{"role": "user", "content": "are you free"}], GenerationSettings(max_tokens=50, seed=3))
    assert "".join(reply) == "You said: are you free"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.finish_reason) == (3, 5, "stop")
    [request] = [json.loads(r.body) for r in fake_openai.requests_to("POST", "/v1/chat/completions")]
    assert (request["max_completion_tokens"], request["seed"], request["temperature"]) == (50, 3, 0.7)
    assert model.score([[{"role": "user", "content": "hi"}]]) is None

    assert backend.load(document, tuned=False).model_id == "gpt-4o-mini-2024-07-18"
    with pytest.raises(ServiceError, match="model_not_found"):
        "".join(backend.load({**document, "model_id": "ft:nope"}).stream([{"role": "user", "content": "hi"}]))
    with pytest.raises(ConfigError, match="nothing to export"):
        backend.export(document, tmp_path / "exported")
