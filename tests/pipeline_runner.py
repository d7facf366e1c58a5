"""Running the pipeline as a user does, in its own process, optionally with a fault injected.

A fault is `(module, function, call_number, kind)`: the named function of a stage module
is wrapped so that its `call_number`-th call raises an exception, receives SIGINT, or kills
the process with SIGKILL, mid-stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

RUNNER = """
import importlib, os, signal, sys
from pathlib import Path
from imessage_finetune.config import load_config
from imessage_finetune.pipeline.tasks import run_doit

config, report, fault, *tasks = sys.argv[1:]
if fault:
    module_name, function_name, call_number, kind = fault.split(":")
    module = importlib.import_module(module_name)
    real = getattr(module, function_name)
    calls = [0]

    def faulty(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(call_number):
            if kind == "exception":
                raise RuntimeError("injected fault")
            os.kill(os.getpid(), signal.SIGKILL if kind == "sigkill" else signal.SIGINT)
        return real(*args, **kwargs)

    setattr(module, function_name, faulty)
sys.exit(run_doit(load_config(Path(config)), ["--reporter", "json", "--output-file", report, *tasks]))
"""


class DoitResult(dict):  # type: ignore[type-arg]
    """Each task's result (success, up-to-date, fail) and "exit"; `.stderr` is what it said."""

    stderr: str = ""


def run_doit(
    config_file: Path, *tasks: str, fault: str = "", env: dict[str, str] | None = None
) -> DoitResult:
    """Run doit tasks in another process. A process killed before doit reported gives only
    the exit code (and stderr)."""
    report = config_file.parent / "doit-report.json"
    report.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(config_file), str(report), fault, *tasks],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    results = DoitResult(exit=str(done.returncode))
    results.stderr = done.stderr
    text = report.read_text() if report.exists() else ""
    if text:
        report_data = json.loads(text)
        results.update({t["name"]: t["result"] for t in report_data["tasks"]})
        # doit's JSON reporter captures what the stages said, and its failure messages.
        said = [t["err"] + t["out"] + (t["error"] or "") for t in report_data["tasks"]]
        results.stderr += "".join(said) + report_data["err"] + report_data["out"]
    else:  # killed or interrupted before doit wrote its report
        assert fault, done.stderr
    return results


def write_config(folder: Path, source: Path | str, extra: str = "") -> Path:
    """A config file in folder with its own artifacts dir (the demo with its own Contacts)."""
    path = folder / "finetune.toml"
    contacts = "auto" if source == "demo" else "none"
    path.write_text(
        f'[source]\npath = "{source}"\ncontacts = "{contacts}"\n[artifacts]\ndir = "out"\n{extra}',
        encoding="utf-8",
    )
    return path
