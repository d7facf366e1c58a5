"""The README tells the truth: its Python example runs, and every command is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imessage_finetune.cli import cli
from imessage_finetune.fixtures.demo import build_demo

PROJECT = Path(__file__).resolve().parents[1]
README = (PROJECT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def test_langchain_example_runs_on_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook-style snippet produces OpenAI examples whose assistant is the Tortoise."""
    [code] = [block for block in PYTHON_BLOCKS if "IMessageChatLoader(" in block]
    monkeypatch.chdir(tmp_path)
    build_demo(tmp_path / "artifacts" / "demo-source")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    training_data = namespace["tortoise_data"]
    assert training_data and all(any(m["role"] == "assistant" for m in ex) for ex in training_data)


# Settings that exercise every step of the recipe, applied to the committed finetune.toml.
VARIANT = {
    "ai_sender": '"tortoise"',
    "group_chats": '"prefix"',
    "system_prompt": '"You are the Tortoise."',
    "idle_gap_hours": "0.5",
    "max_tokens": "120",
    "overlap_messages": "1",
    "redact_urls": "true",
    "redact_phones": "true",
    "validation_share": "0.3",
    "split_seed": "7",
}


@pytest.mark.parametrize("variant", [{}, VARIANT], ids=["committed", "variant"])
def test_langchain_recipe_gives_the_training_files(
    variant: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's recipe, run as printed after `doit dataset` on the demo, gives exactly
    train.jsonl's examples (and validation.jsonl's): same count, messages, roles, order."""
    from pipeline_runner import run_doit

    text = (PROJECT / "finetune.toml").read_text(encoding="utf-8")
    for key, value in variant.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1, key
    config = tmp_path / "finetune.toml"
    config.write_text(text, encoding="utf-8")
    assert run_doit(config, "dataset")["exit"] == "0"
    [code] = [block for block in PYTHON_BLOCKS if "prepare_for_finetuning(" in block]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)

    def lines(name: str) -> list[list[dict]]:
        path = tmp_path / "artifacts" / name
        return [json.loads(line)["messages"] for line in path.read_text().splitlines()] if path.exists() else []

    assert namespace["training_data"] == lines("train.jsonl") != []
    assert namespace["validation_data"] == lines("validation.jsonl")
    assert (namespace["validation_data"] != []) == bool(variant)


def test_every_command_is_in_the_readme() -> None:
    """Each CLI command appears in the README's command table."""
    for name in cli.commands:
        assert f"| `{name}" in README, f"`{name}` is not documented in README.md"


def test_local_model_langchain_example_streams_a_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The LangChain snippet of the local backend, run in a project trained on a tiny model."""
    pytest.importorskip("peft", reason="the local backend's extra is not installed: pip install -e '.[local]'")
    from imessage_finetune.backends.local.tiny_model import build_demo_model
    from pipeline_runner import run_doit

    base = build_demo_model(tmp_path / "tiny")
    config = tmp_path / "finetune.toml"  # the README's layout: artifacts/ beside finetune.toml
    config.write_text(f'[finetune.local]\nbase_model = "{base}"\nlearning_rate = 5e-3\nepochs = 1\n')
    assert run_doit(config, "train")["exit"] == "0"
    [code] = [block for block in PYTHON_BLOCKS if "LocalChatModel" in block]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()
