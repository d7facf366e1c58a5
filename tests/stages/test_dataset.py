"""train.jsonl from the demo: OpenAI-valid lines, the chosen voice, a split, and the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from imessage_finetune import artifacts
from imessage_finetune.config import DatasetConfig, FinetuneConfig
from imessage_finetune.stages.dataset import write_dataset
from imessage_finetune.fixtures.demo import build_demo
from imessage_finetune.errors import DatasetError
from imessage_finetune.stages.merged import write_merged
from imessage_finetune.stages.sessions import load_contacts, write_sessions
from imessage_finetune.sources.chatdb.reader import ReaderOptions
from imessage_finetune.stages.snapshot import take_snapshot, write_contacts
from imessage_finetune.tokens import counter_for
from imessage_finetune.openai_file import validate_file

COUNTER = counter_for(FinetuneConfig().model)


@pytest.fixture(scope="module")
def demo_sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sessions.json of the built-in demo."""
    folder = tmp_path_factory.mktemp("demo")
    demo = build_demo(folder / "source")
    take_snapshot(demo.chat_db, folder / "chat.db")
    write_contacts([demo.addressbook], folder / "contacts.json")
    write_sessions(folder / "chat.db", load_contacts(folder / "contacts.json"), folder / "sessions.json", ReaderOptions())
    return folder / "sessions.json"


def build(sessions: Path, out: Path, **options: object) -> dict:
    config = replace(DatasetConfig(), **options)
    out.mkdir(exist_ok=True)
    write_merged(sessions, out / "merged.json", config, COUNTER)
    return write_dataset(out / "merged.json", out, config, FinetuneConfig(), COUNTER).report


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_demo_train_file_passes_the_validator_and_the_schema(demo_sessions: Path, tmp_path: Path) -> None:
    """Every line matches train_line.schema.json and OpenAI's rules, and ends on the assistant."""
    report = build(demo_sessions, tmp_path, system_prompt="You are me, texting friends.")
    train = tmp_path / artifacts.TRAIN.filename
    result = validate_file(train, token_limit=65_536)
    assert result.ok, [str(p) for p in result.errors]
    schema = json.loads(artifacts.TRAIN.schema_path.read_text())
    for line in lines(train):
        jsonschema.validate(line, schema)
        assert line["messages"][0] == {"role": "system", "content": "You are me, texting friends."}
        assert line["messages"][-1]["role"] == "assistant"
    assert report["examples"]["train"] == len(lines(train)) >= 10
    assert report["tokens_per_example"]["max"] <= DatasetConfig().max_tokens
    jsonschema.validate(
        json.loads((tmp_path / artifacts.DATASET_REPORT.filename).read_text()),
        json.loads(artifacts.DATASET_REPORT.schema_path.read_text()),
    )


def test_a_characters_voice_gives_assistant_turns_of_that_character_only(demo_sessions: Path, tmp_path: Path) -> None:
    """ai_sender = "Tortoise": every assistant turn is made of the Tortoise's messages."""
    build(demo_sessions, tmp_path, ai_sender="Tortoise")
    sessions = json.loads(demo_sessions.read_text())
    by_sender: dict[str, set[str]] = {}
    for session in sessions["sessions"]:
        for m in session["messages"]:
            by_sender.setdefault(m["data"]["additional_kwargs"]["sender"], set()).add(m["data"]["content"])
    assistant = [m["content"] for line in lines(tmp_path / "train.jsonl") for m in line["messages"] if m["role"] == "assistant"]
    assert assistant
    for turn in assistant:
        assert all(part in by_sender["Tortoise"] for part in turn.split("\n\n")), turn[:40]


def test_validation_split_is_deterministic_and_by_chat(demo_sessions: Path, tmp_path: Path) -> None:
    """A seeded share of chats goes to validation.jsonl; same seed, same bytes; no overlap."""
    a = build(demo_sessions, tmp_path / "a", validation_share=0.3, split_seed=7)
    build(demo_sessions, tmp_path / "b", validation_share=0.3, split_seed=7)
    for name in ("train.jsonl", "validation.jsonl", "dataset-report.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a["examples"]["validation"] > 0
    train = {json.dumps(x) for x in lines(tmp_path / "a" / "train.jsonl")}
    assert not train & {json.dumps(x) for x in lines(tmp_path / "a" / "validation.jsonl")}


def test_report_counts_billed_tokens_and_cost(demo_sessions: Path, tmp_path: Path) -> None:
    """Billed tokens = tokens x epochs; cost from the configured price table."""
    report = build(demo_sessions, tmp_path)
    assert report["billed_tokens"] == report["tokens_total"] * FinetuneConfig().n_epochs
    assert report["estimated_cost_usd"] == round(report["billed_tokens"] / 1e6 * 5.0, 2)
    assert report["tokenizer"] == {"encoding": "o200k_base", "exact": True}
    assert report["dropped"]["sessions"]["tapback"] > 0


def test_too_few_examples_is_refused_and_nothing_is_published(demo_sessions: Path, tmp_path: Path) -> None:
    """Fewer than 10 examples would be refused by OpenAI: the stage fails before writing."""
    with pytest.raises(DatasetError, match="at least 10"):
        build(demo_sessions, tmp_path, ai_sender="Sloth")
    assert not (tmp_path / "train.jsonl").exists()
