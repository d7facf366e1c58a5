"""The train stage depends only on what its backend uses: under the local backend no
OpenAI-only setting retrains the model (train reads train.jsonl, not the dataset report with
its cost estimate), and under the openai backend no local-only setting sends or trains
again (issue 12, item 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fake_openai import API_KEY, FakeOpenAI
from pipeline_runner import run_doit, write_config

pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")

# One changed value per key a backend does not use (the other backend's keys).
OPENAI_ONLY = {
    "price_per_million_tokens": '{ "gpt-4.1-mini-2025-04-14" = 9.0 }',
    "n_epochs": "5",
    "suffix": '"other"',
    "batch_size": "8",
    "learning_rate_multiplier": "2.0",
    "seed": "7",
    "max_cost": "1.0",
    "confirm": "false",
    "poll_interval": "1.0",
    "deadline_hours": "1.0",
    "request_timeout": "5.0",
    "base_url": '"http://127.0.0.1:9/v1"',
    "api_key_file": '"key.txt"',
}
LOCAL_ONLY = {
    "base_model": '"Qwen/Qwen2.5-0.5B-Instruct"',
    "lora_rank": "8",
    "lora_alpha": "16",
    "lora_dropout": "0.1",
    "target_modules": '["q_proj"]',
    "learning_rate": "1e-3",
    "epochs": "2",
    "batch_size": "2",
    "max_seq_length": "512",
    "gradient_checkpointing": "true",
    "seed": "1",
    "device": '"cpu"',
    "checkpoint_steps": "5",
    "max_new_tokens": "5",
    "temperature": "0.0",
}


def config(folder: Path, finetune: dict[str, str], local: dict[str, str]) -> Path:
    lines = "".join(f"{key} = {value}\n" for key, value in finetune.items())
    local_lines = "".join(f"{key} = {value}\n" for key, value in local.items())
    return write_config(folder, "demo", f"[finetune]\n{lines}[finetune.local]\n{local_lines}")


def test_openai_only_keys_never_retrain_a_local_model(tmp_path: Path) -> None:
    base = {"backend": '"local"'}
    local = {"base_model": '"demo"', "epochs": "1"}
    first = run_doit(config(tmp_path, base, local), "train")
    assert first["train"] == "success", first.stderr
    for key, value in OPENAI_ONLY.items():
        result: dict[str, Any] = run_doit(config(tmp_path, {**base, key: value}, local), "train")
        assert result["exit"] == "0", (key, result.stderr)
        assert result["train"] == "up-to-date", (key, result.stderr)
    # ...while a local key does retrain it.
    assert run_doit(config(tmp_path, base, {**local, "lora_dropout": "0.1"}), "train")["train"] == "success"


def test_local_only_keys_never_send_or_train_again_at_the_service(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    base = {"backend": '"openai"', "base_url": f'"{fake_openai.base_url}"', "confirm": "false", "poll_interval": "0.01"}
    env = {"OPENAI_API_KEY": API_KEY, "IMESSAGE_FINETUNE_STRICT_API": "1"}
    first = run_doit(config(tmp_path, base, {}), "train", env=env)
    assert first["train"] == "success", first.stderr
    for key, value in LOCAL_ONLY.items():
        result = run_doit(config(tmp_path, base, {key: value}), "train", env=env)
        assert result["exit"] == "0", (key, result.stderr)
        stale = {stage for stage in ("merged", "dataset", "upload", "train") if result[stage] != "up-to-date"}
        assert not stale, (key, stale, result.stderr)
    assert len(fake_openai.state.jobs) == 1
    # ...while an OpenAI training key does train again.
    assert run_doit(config(tmp_path, {**base, "n_epochs": "2"}, {}), "train", env=env)["train"] == "success"
    assert len(fake_openai.state.jobs) == 2
