"""The README tells the truth: its Python example runs, and every command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imessage_finetune.cli import cli
from imessage_finetune.fixtures.demo import build_demo

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def test_langchain_example_runs_on_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook-style snippet produces OpenAI examples whose assistant is the Tortoise."""
    [code] = [block for block in PYTHON_BLOCKS if "IMessageChatLoader" in block]
    monkeypatch.chdir(tmp_path)
    build_demo(tmp_path / "artifacts" / "demo-source")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    training_data = namespace["training_data"]
    assert training_data and all(any(m["role"] == "assistant" for m in ex) for ex in training_data)


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
