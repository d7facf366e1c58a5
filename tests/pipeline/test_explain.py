"""What status, plan and a run say about stages: true words for missing artifacts, stages
never built, and stages forced (issue 12, item 7)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from imessage_finetune.cli import cli
from imessage_finetune.config import load_config
from imessage_finetune.pipeline.tasks import run_doit as doit
from pipeline_runner import run_doit, write_config


def test_missing_never_built_and_forced_are_called_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, "demo")

    def invoke(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli, ["--config", str(config), *args])
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = invoke("status", "--json")
    before = {s["name"]: (s["status"], s["reasons"]) for s in json.loads(out)}
    assert code == 1 and all(status == ("run", ["never built"]) for status in before.values()), before
    code, out, _ = invoke("status")
    assert "never built" in out and "error" not in out

    assert run_doit(config, "dataset")["exit"] == "0"
    assert doit(load_config(config), ["clean"]) == 0
    code, out, _ = invoke("status", "--json")
    after = {s["name"]: (s["status"], s["reasons"]) for s in json.loads(out)}
    # (the demo's source files, which the snapshot reads, are gone too)
    assert after["snapshot"][0] == "run"
    assert set(after["snapshot"][1]) == {"chat.db is missing", "AddressBook-v22.abcddb is missing", "contacts.json is missing"}
    assert after["sessions"][0] == "run" and "input missing: chat.db (snapshot builds it)" in after["sessions"][1]
    assert "sessions.json is missing" in after["sessions"][1]
    assert after["train"] == ("run", ["never built"])
    assert not any("edited or damaged" in " ".join(reasons) or status == "error" for status, reasons in after.values())
    code, out, err = invoke("plan", "train")
    assert code == 0 and "error" not in out and "6 stage(s) would run" in err

    assert run_doit(config, "dataset")["exit"] == "0"
    code, _, err = invoke("run", "sessions", "--force")
    assert code == 0, err
    assert "sessions: running (forced)" in err and "snapshot: up to date" in err
