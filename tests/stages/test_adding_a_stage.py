"""A newcomer adds a stage: one module (here, the declaration below) and one registration
line. doit, `dag`, `status`, `plan`, `verify` and `run` then know it without any other edit;
and a stage that reads a config key it did not declare is stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from imessage_finetune import artifacts, stages
from imessage_finetune.atomic import atomic_write
from imessage_finetune.cli import cli
from imessage_finetune.config import UndeclaredKey, load_config
from imessage_finetune.jsonio import dump_json, load_json
from imessage_finetune.pipeline.tasks import run_doit
from imessage_finetune.stages.stage import Stage, StageContext
from pipeline_runner import write_config

# --- the newcomer's module: a stage that counts the messages of each chat -------------------

COUNTS = artifacts.Artifact("counts", "counts.json")


def count_messages(ctx: StageContext) -> None:
    """Messages per chat, from sessions.json, into counts.json."""
    document = load_json(ctx.path(artifacts.SESSIONS).read_bytes())
    counts = {s["chat_identifier"]: len(s["messages"]) for s in document["sessions"]}
    if ctx.config.sessions.groups:  # a declared key, read through the stage's view
        counts["groups included"] = 1
    with atomic_write(ctx.path(COUNTS)) as out:
        out.write(dump_json(counts))
    ctx.say(f"{len(counts)} chats counted")


STAGE = Stage(
    name="counts",
    doc="Count the messages of each chat into counts.json.",
    run=count_messages,
    reads=(artifacts.SESSIONS,),
    writes=(COUNTS,),
    keys=("sessions.groups",),
)

# ----------------------------------------------------------------------------------------------


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registration line a newcomer adds to `stages/__init__.py`."""
    monkeypatch.setattr(stages, "STAGES", [*stages.STAGES, STAGE])


def invoke(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_stage_is_one_declaration_and_one_line(tmp_path: Path, registered: None, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "demo")

    assert run_doit(load_config(config), ["list"]) == 0
    listed = capsys.readouterr().out
    assert "counts" in listed and "Count the messages of each chat into counts.json." in listed

    code, out, _ = invoke(config, "dag")
    assert code == 0 and "counts: after sessions; writes counts.json" in out.splitlines()
    code, out, _ = invoke(config, "dag", "--mermaid")
    assert "counts --> a" in out and "--> counts" in out

    code, out, err = invoke(config, "plan", "counts")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["demo", "snapshot", "sessions", "counts"]
    assert "4 stage(s) would run" in err

    code, _, err = invoke(config, "run", "counts")
    assert code == 0, err
    assert "counts: running (never built)" in err and "counts: 15 chats counted" in err
    counts = json.loads((tmp_path / "out" / "counts.json").read_text())
    assert counts["+15555550101"] == 76 and counts["groups included"] == 1

    code, out, _ = invoke(config, "status", "--json")
    assert {s["name"]: s["status"] for s in json.loads(out)}["counts"] == "up-to-date"
    code, out, err = invoke(config, "verify")
    assert code == 0 and "0 mismatch(es)" in err
    lock = json.loads((tmp_path / "out" / "pipeline.lock.json").read_text())
    assert lock["stages"]["counts"]["params"] == {"sessions.groups": True}

    # Its declared key is in its fingerprint: changing it reruns it (and what the key shapes).
    config.write_text(config.read_text() + "[sessions]\ngroups = false\n")
    code, out, _ = invoke(config, "status")
    assert code == 1 and "sessions.groups: True -> False" in out
    (tmp_path / "out" / "counts.json").write_text("{}")
    code, out, err = invoke(config, "verify")
    assert code == 1 and "counts.json: changed since it was built (stage counts)" in out


def test_a_stage_that_reads_a_key_it_did_not_declare_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view a stage gets refuses undeclared keys, so its fingerprint cannot miss one."""
    sneaky = Stage(
        name="counts",
        doc="Reads a key it does not declare.",
        run=lambda ctx: print(ctx.config.dataset.ai_sender),
        reads=(artifacts.SESSIONS,),
        writes=(COUNTS,),
        keys=("sessions.groups",),
    )
    monkeypatch.setattr(stages, "STAGES", [*stages.STAGES, sneaky])
    config = load_config(write_config(tmp_path, "demo"))
    view = sneaky.view(config)
    assert view.sessions.groups is True
    with pytest.raises(UndeclaredKey, match="stage counts read the config key dataset.ai_sender without declaring it"):
        view.dataset.ai_sender
    assert run_doit(config, ["counts"]) == 2  # doit's "error" (a bug, with its traceback), not a user's failure
    assert not (tmp_path / "out" / "counts.json").exists()
