"""The README tells the truth: its Python example runs, and every command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imessage_finetune.cli import cli
from imessage_finetune.demo import build_demo

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_langchain_example_runs_on_the_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook-style snippet produces OpenAI examples whose assistant is the Tortoise."""
    [code] = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
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
