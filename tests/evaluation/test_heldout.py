"""The held-out set by time: the newest conversations, none of whose messages is trained on,
overlapping windows included; on the demo and on a generated database."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from chatdb_builder import ChatDbBuilder
from imessage_finetune import artifacts
from imessage_finetune.sources.chatdb.reader import ReaderOptions
from imessage_finetune.config import DatasetConfig, FinetuneConfig
from imessage_finetune.stages.dataset import openai_line, write_dataset
from imessage_finetune.fixtures.demo import build_demo
from imessage_finetune.evaluation.heldout import DAY, Span, split_by_time
from imessage_finetune.stages.merged import write_merged
from imessage_finetune.stages.sessions import load_contacts, write_sessions
from imessage_finetune.stages.snapshot import take_snapshot, write_contacts
from imessage_finetune.tokens import counter_for

COUNTER = counter_for(FinetuneConfig().model)


def test_share_holds_out_the_newest_examples_and_drops_those_spanning_the_cutoff() -> None:
    spans = [Span(0, 10), Span(20, 30), Span(25, 45), Span(40, 50), Span(60, 70), Span(80, 90)]
    split = split_by_time(spans, share=0.34, days=0)
    assert split.sides == ("train", "train", "train", "train", "heldout", "heldout")
    assert split.cutoff == 60
    # 3 of 6 wanted: the cutoff at 40 would leave (25, 45) spanning it, so 50% costs one more.
    split = split_by_time(spans, share=0.5, days=0)
    assert split.count("heldout") + split.count("boundary") <= 3 and split.count("heldout") >= 2
    assert split_by_time(spans, share=0, days=0).cutoff is None
    assert split_by_time([Span(5, 9), Span(5, 9)], share=0.5, days=0).sides == ("train", "train")


def test_days_hold_out_everything_that_starts_in_the_last_days() -> None:
    spans = [Span(0, DAY), Span(5 * DAY, 5 * DAY + 60), Span(9 * DAY, 10 * DAY)]
    split = split_by_time(spans, share=0.9, days=3)  # days win over the share
    assert split.cutoff == 7 * DAY and split.sides == ("train", "train", "heldout")
    around = [Span(0, DAY), Span(5 * DAY - 60, 5 * DAY + 60), Span(9 * DAY, 10 * DAY)]
    assert split_by_time(around, share=0, days=5).sides == ("train", "boundary", "heldout")


def test_no_training_example_ever_reaches_past_the_cutoff() -> None:
    """Whatever the spans: every held-out example starts after every training example ends."""
    rng = random.Random(7)
    for _ in range(200):
        spans = []
        for _ in range(rng.randint(1, 40)):
            start = rng.uniform(0, 1000)
            spans.append(Span(start, start + rng.expovariate(1 / 30)))
        split = split_by_time(spans, share=rng.choice([0.05, 0.1, 0.3, 0.6]), days=0)
        train = [s for s, side in zip(spans, split.sides) if side == "train"]
        held = [s for s, side in zip(spans, split.sides) if side == "heldout"]
        assert train, "the whole history was held out"
        if held:
            assert max(s.end for s in train) < min(s.start for s in held)


def _build(sessions: Path, out: Path, **options: object) -> dict:
    config = replace(DatasetConfig(), **options)
    out.mkdir(exist_ok=True)
    write_merged(sessions, out / "merged.json", config, COUNTER)
    return write_dataset(out / "merged.json", out, config, FinetuneConfig(), COUNTER).report


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _guids_by_side(out: Path, config: DatasetConfig) -> tuple[dict[str, float], dict[str, float]]:
    """The message guids (and times) of the examples that ended up in train.jsonl and in
    heldout.jsonl, matched through their rendered lines."""
    train, held = set(_lines(out / artifacts.TRAIN.filename)), set(_lines(out / artifacts.HELDOUT.filename))
    sides: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for example in json.loads((out / "merged.json").read_text())["examples"]:
        line = json.dumps(
            openai_line(example, config.system_prompt, partner=config.partner_in_prompt),
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for side, lines in zip(sides, (train, held)):
            if line in lines:
                for message in example["messages"]:
                    kwargs = message["data"]["additional_kwargs"]
                    side.update(dict.fromkeys(kwargs["guids"], kwargs["message_time"]))
    return sides


@pytest.fixture(scope="module")
def demo_sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    demo = build_demo(folder / "source")
    take_snapshot(demo.chat_db, folder / "chat.db")
    write_contacts([demo.addressbook], folder / "contacts.json")
    write_sessions(
        folder / "chat.db", load_contacts(folder / "contacts.json"), folder / "sessions.json", ReaderOptions()
    )
    return folder / "sessions.json"


def test_the_demo_holds_out_its_newest_conversations_and_no_held_out_message_is_trained_on(
    demo_sessions: Path, tmp_path: Path
) -> None:
    report = _build(demo_sessions, tmp_path)
    held_out = report["heldout"]
    assert held_out["share"] == 0.1 and held_out["cutoff"] is not None
    assert report["examples"]["heldout"] == held_out["examples"] == len(_lines(tmp_path / "heldout.jsonl")) >= 4
    assert held_out["replies"] >= held_out["examples"]
    jsonschema.validate(
        json.loads((tmp_path / artifacts.DATASET_REPORT.filename).read_text()),
        json.loads(artifacts.DATASET_REPORT.schema_path.read_text()),
    )
    train, held = _guids_by_side(tmp_path, DatasetConfig())
    assert len(held) >= 10 and not set(train) & set(held)
    assert max(train.values()) < min(held.values())
    merged_examples = len(json.loads((tmp_path / "merged.json").read_text())["examples"])
    assert report["examples"]["train"] + held_out["examples"] + held_out["left_out_at_cutoff"] == merged_examples


def test_holding_out_nothing_writes_no_heldout_file_and_holding_out_everything_is_refused(
    demo_sessions: Path, tmp_path: Path
) -> None:
    from imessage_finetune.errors import DatasetError

    _build(demo_sessions, tmp_path)
    with pytest.raises(DatasetError, match=r"heldout_days = 3650 holds out the whole history \(it spans 353 days\)"):
        _build(demo_sessions, tmp_path, heldout_days=3650.0)
    report = _build(demo_sessions, tmp_path, heldout_share=0.0)
    assert report["heldout"]["cutoff"] is None and report["examples"]["heldout"] == 0
    assert not (tmp_path / artifacts.HELDOUT.filename).exists()


def test_the_partner_option_names_who_each_conversation_is_with(demo_sessions: Path, tmp_path: Path) -> None:
    _build(demo_sessions, tmp_path, partner_in_prompt=True, system_prompt="You are me.")
    prompts = {json.loads(line)["messages"][0]["content"] for line in _lines(tmp_path / "train.jsonl")}
    assert "You are me. You are texting with Tortoise." in prompts
    assert any(p.startswith('You are me. You are texting with the group "Paradox Club') for p in prompts)
    assert "You are me. You are texting with someone who is not in your contacts." in prompts
    assert not any("+1555" in p for p in prompts), "a handle without a contact name was spelled out"


@pytest.fixture(scope="module")
def generated_sessions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated history: 12 chats over two years, bursts of conversation, every text unique."""
    folder = tmp_path_factory.mktemp("generated")
    db = ChatDbBuilder(folder / "chat.db")
    rng = random.Random(14)
    number = 0
    for c in range(12):
        handle = db.handle(f"+1555010{c:04d}")
        chat = db.chat(f"+1555010{c:04d}", [handle])
        clock = 1_700_000_000 + c * 3_600
        for _ in range(rng.randint(8, 16)):  # conversations, days apart
            clock += rng.uniform(1, 6) * DAY
            for _ in range(rng.randint(3, 14)):
                clock += rng.uniform(20, 600)
                number += 1
                words = " ".join(
                    rng.choice(("so", "then", "well", "yes", "maybe", "later", "sure"))
                    for _ in range(rng.randint(2, 30))
                )
                from_me = rng.random() < 0.5
                db.message(chat, f"m{number} {words}", from_me=from_me, handle=0 if from_me else handle, at=clock)
    db.close()
    write_sessions(folder / "chat.db", {}, folder / "sessions.json", ReaderOptions())
    return folder / "sessions.json"


@pytest.mark.parametrize("options", [{"heldout_share": 0.2}, {"heldout_days": 14.0}])
def test_on_a_generated_history_with_overlapping_windows_no_held_out_text_reaches_train(
    generated_sessions: Path, tmp_path: Path, options: dict[str, float]
) -> None:
    # A small token budget cuts long conversations into windows that overlap by 4 turns.
    report = _build(generated_sessions, tmp_path, max_tokens=120, overlap_messages=4, **options)
    merged = json.loads((tmp_path / "merged.json").read_text())["examples"]
    guids = [g for e in merged for m in e["messages"] for g in m["data"]["additional_kwargs"]["guids"]]
    assert len(guids) > len(set(guids)), "no overlapping windows: the test would not test them"
    assert report["heldout"]["examples"] >= 5 and report["examples"]["train"] >= 20
    trained_text = {m["content"] for line in _lines(tmp_path / "train.jsonl") for m in json.loads(line)["messages"]}
    held_text = {m["content"] for line in _lines(tmp_path / "heldout.jsonl") for m in json.loads(line)["messages"]}
    # Every text starts with its unique number, and merged turns join several with "\n\n".
    trained = {part.split()[0] for text in trained_text for part in text.split("\n\n")}
    held = {part.split()[0] for text in held_text for part in text.split("\n\n")}
    assert held and not trained & held
    train, held_guids = _guids_by_side(tmp_path, DatasetConfig())
    assert max(train.values()) < min(held_guids.values())
