"""A run that fails, is interrupted or is killed in the middle of any stage never leaves a
partial artifact that a later run takes for good; the next run rebuilds exactly what is
needed and ends with the artifacts a clean build gives. Also: hand edits of each
intermediate, each config key, and code changes rerun exactly the right stages."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from chatdb_builder import BASE_TIME, ChatDbBuilder
from imessage_finetune import artifacts
from imessage_finetune.pipeline.lockfile import LOCK_FILE
from pipeline_runner import run_doit, write_config

ALICE = "+15555550101"
STAGES = ("snapshot", "sessions", "merged", "dataset")
STATE_FILES = {artifacts.STATE_FILE, LOCK_FILE, "doit-report.json"}


def source(folder: Path) -> ChatDbBuilder:
    """A chat.db with twelve short conversations, hours apart: enough for a training file."""
    folder.mkdir(parents=True, exist_ok=True)
    db = ChatDbBuilder(folder / "chat.db")
    chat = db.chat(ALICE, [db.handle(ALICE)])
    for day in range(12):
        start = BASE_TIME + day * 86400
        db.message(chat, f"day {day}: how are you?", handle=1, at=start)
        db.message(chat, f"fine on day {day}, thanks", from_me=True, at=start + 60)
        db.message(chat, "what are you up to", handle=1, at=start + 120)
        db.message(chat, f"reading about paradox number {day}", from_me=True, at=start + 180)
    db.close()
    return db


def outputs(project: Path) -> dict[str, str]:
    """sha256 of every file in the artifacts folder except doit's and the lock's bookkeeping."""
    out = project / "out"
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in STATE_FILES
    }


# For each stage: a change that makes it (and what follows) rebuild, and a function it calls
# while writing its outputs, where the fault strikes.
def add_message(db_folder: Path, config: Path) -> None:
    """One new message in the source database."""
    conn = sqlite3.connect(db_folder / "chat.db")
    with conn:
        conn.execute(
            "INSERT INTO message (guid, text, handle_id, date, is_from_me) "
            "VALUES ('NEW', 'one more', 1, 760000000000000000, 0)"
        )
        conn.execute("INSERT INTO chat_message_join VALUES (1, last_insert_rowid(), 760000000000000000)")
    conn.close()


CHANGES = {
    "snapshot": (lambda folder, config: add_message(folder / "src", config), ""),
    "sessions": (None, '[sessions]\nowner_name = "Ana"\n'),
    "merged": (None, '[dataset]\nmerge_separator = " / "\n'),
    "dataset": (None, "[finetune]\nn_epochs = 5\n"),
}
FAULT_POINTS = {
    "snapshot": ("imessage_finetune.stages.snapshot", "dump_json", 1),
    "sessions": ("imessage_finetune.stages.sessions", "dump_compact", 1),
    "merged": ("imessage_finetune.stages.merged", "dump_compact", 12),
    "dataset": ("imessage_finetune.stages.dataset", "dump_compact", 12),
}


def changed_project(folder: Path, stage: str) -> Path:
    """A project built once, then changed so that `stage` must rebuild."""
    source(folder / "src")
    config = write_config(folder, folder / "src" / "chat.db")
    assert run_doit(config, "dataset")["exit"] == "0"
    change, extra = CHANGES[stage]
    if change:
        change(folder, config)
    write_config(folder, folder / "src" / "chat.db", extra)
    return config


@pytest.mark.parametrize("kind", ["exception", "sigint", "sigkill"])
@pytest.mark.parametrize("stage", STAGES)
def test_fault_in_a_stage_keeps_the_last_good_artifacts_and_the_next_run_recovers(
    tmp_path: Path, stage: str, kind: str
) -> None:
    """Exception, Ctrl-C or SIGKILL mid-stage: the stage's targets keep their previous bytes
    (no partial file), upstream stages are not redone, and the rerun equals a clean build."""
    config = changed_project(tmp_path / "p", stage)
    before = outputs(config.parent)
    module, function, upper = FAULT_POINTS[stage]
    point = random.Random(f"{stage}-{kind}").randint(1, upper)
    failed = run_doit(config, "dataset", fault=f"{module}:{function}:{point}:{kind}")
    assert failed["exit"] != "0"
    after_fault = outputs(config.parent)
    stage_targets = {
        "snapshot": ["chat.db", "contacts.json"],
        "sessions": ["sessions.json"],
        "merged": ["merged.json"],
        "dataset": ["train.jsonl", "dataset-report.json"],
    }[stage]
    for name in stage_targets:
        if stage != "snapshot" or name == "contacts.json":
            assert after_fault.get(name) == before.get(name), f"{name} changed by a failed run"

    rerun = run_doit(config, "dataset")
    assert rerun["exit"] == "0"
    for upstream in STAGES[: STAGES.index(stage)]:
        assert rerun[upstream] == "up-to-date", f"{upstream} redone after a fault in {stage}"
    clean = tmp_path / "clean"
    clean_config = changed_project(clean, stage)
    assert run_doit(clean_config, "dataset")["exit"] == "0"
    assert outputs(config.parent) == outputs(clean)
    assert not [p for p in (config.parent / "out").rglob(".*tmp-*")], "temporary files left"


@pytest.mark.parametrize(
    ("artifact", "first_rerun"),
    [("chat.db", "snapshot"), ("contacts.json", "snapshot"), ("sessions.json", "sessions"),
     ("merged.json", "merged"), ("train.jsonl", "dataset"), ("dataset-report.json", "dataset")],
)  # fmt: skip
def test_hand_edited_intermediates_are_rebuilt(tmp_path: Path, artifact: str, first_rerun: str) -> None:
    """Tampering with any artifact reruns its producer; the result is the original bytes."""
    source(tmp_path / "src")
    config = write_config(tmp_path, tmp_path / "src" / "chat.db")
    run_doit(config, "dataset")
    good = outputs(tmp_path)
    path = tmp_path / "out" / artifact
    path.write_bytes(path.read_bytes()[:-10] + b"tampered!\n")
    result = run_doit(config, "dataset")
    assert result[first_rerun] == "success"
    for upstream in STAGES[: STAGES.index(first_rerun)]:
        assert result[upstream] == "up-to-date"
    assert outputs(tmp_path) == good


KEY_CHANGES = [
    ("[sessions]\nowner_name = \"Ana\"\n", "sessions"),
    ("[sessions]\nattachments = \"placeholder\"\n", "sessions"),
    ("[sessions]\nexclude_chats = [\"nobody\"]\n", "sessions"),
    ("[sessions]\nend_date = \"2030-01-01\"\n", "sessions"),
    ("[sessions]\ngroups = false\n", "sessions"),
    ("[dataset]\nmerge_separator = \" | \"\n", "merged"),
    ("[dataset]\nidle_gap_hours = 5.0\n", "merged"),
    ("[dataset]\nmax_tokens = 3000\n", "merged"),
    ("[dataset]\noverlap_messages = 2\n", "merged"),
    ("[dataset]\nredact_phones = true\n", "merged"),
    ("[dataset]\nsystem_prompt = \"You are me.\"\n", "merged"),
    ("[dataset]\nsplit_seed = 1\n", "dataset"),
    ("[finetune]\nn_epochs = 4\n", "dataset"),
    ("[finetune]\nmodel = \"gpt-4o-mini-2024-07-18\"\n", "merged"),
    ("busy_timeout = 3.0\n", None),  # a [source] key: written inside that section
]


def test_each_config_key_reruns_exactly_its_stage_and_downstream(tmp_path: Path) -> None:
    """A key reruns the first stage that reads it (and what follows, unless its output is
    byte-identical); nothing upstream. busy_timeout shapes no output and reruns nothing."""
    source(tmp_path / "src")
    db = tmp_path / "src" / "chat.db"
    config = write_config(tmp_path, db)
    run_doit(config, "dataset")
    for extra, first in KEY_CHANGES:
        write_config(tmp_path, db, extra if extra.startswith("[") else "")
        if not extra.startswith("["):
            config.write_text(config.read_text().replace("[artifacts]", extra + "[artifacts]"))
        result = run_doit(config, "dataset")
        ran = [s for s in STAGES if result[s] == "success"]
        if first is None:
            assert ran == [], extra
        else:
            assert ran and ran[0] == first, (extra, ran)
            assert all(result[s] == "up-to-date" for s in STAGES[: STAGES.index(first)]), extra
        write_config(tmp_path, db)
        run_doit(config, "dataset")
