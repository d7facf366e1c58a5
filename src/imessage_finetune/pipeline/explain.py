"""Why a stage runs: reasons for each stage, a status table, a real dry run, the DAG, and
the doit reporter that says all of it during a run.

doit decides staleness; this module asks doit's own dependency manager for the reasons
(`get_status(..., get_log=True)`) and lets each of our uptodate checks describe what changed
(`explain(values)`), so a run says "dataset.ai_sender: 'me' -> 'Tortoise'" rather than
"uptodate check false".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from doit.control import TaskControl
from doit.dependency import Dependency, MD5Checker
from doit.globals import Globals
from doit.loader import load_doit_config, load_tasks
from doit.reporter import ConsoleReporter
from doit.task import Task

from imessage_finetune.config import RunOptions
from imessage_finetune.pipeline.doit_state import SyncedJsonDB


@dataclass(frozen=True)
class StageStatus:
    """A stage's state: `up-to-date`, `run` (stale) or `error`, and why."""

    name: str
    status: str
    reasons: tuple[str, ...]


def _short(path: str) -> str:
    return Path(path).name


def task_reasons(task: Task, dep_manager: Dependency, tasks: dict[str, Task]) -> tuple[str, list[str]]:
    """doit's status of one task and the human reasons behind it."""
    status = dep_manager.get_status(task, tasks, get_log=True)
    values = dep_manager.get_values(task.name)
    reasons: list[str] = []
    for utd, _args, _kwargs in status.reasons.get("uptodate_false", []):
        explain = getattr(utd, "explain", None)
        reasons += explain(values) if explain else ["an up-to-date check failed"]
    for target in status.reasons.get("missing_target", []):
        reasons.append(f"{_short(target)} does not exist")
    if status.reasons.get("changed_file_dep"):
        reasons.append("input changed: " + ", ".join(_short(p) for p in sorted(status.reasons["changed_file_dep"])))
    for missing in status.reasons.get("missing_file_dep", []):
        reasons.append(f"input missing: {_short(missing)}")
    if status.reasons.get("added_file_dep") or status.reasons.get("removed_file_dep"):
        reasons.append("its list of inputs changed")
    if status.reasons.get("checker_changed"):
        reasons.append("the way inputs are compared changed")
    if status.status == "run" and (not reasons or "never built" in reasons):
        reasons = ["never built"]
    return status.status, list(dict.fromkeys(reasons))


def _load(namespace: dict[str, Any]) -> tuple[dict[str, Task], dict[str, Any]]:
    task_list = load_tasks(namespace)
    return TaskControl(task_list).tasks, load_doit_config(namespace)


def upstream(task: Task, tasks: dict[str, Task]) -> list[str]:
    """Names of the tasks this one needs (explicit, and producers of its input files)."""
    producers = {target: t.name for t in tasks.values() for target in t.targets}
    names = list(task.task_dep) + [producers[f] for f in sorted(task.file_dep) if f in producers]
    return list(dict.fromkeys(n for n in names if n in tasks))


def ordered(tasks: dict[str, Task]) -> list[str]:
    """The tasks in dependency order (ties by name), for tables and plans."""
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for dep in upstream(tasks[name], tasks):
            visit(dep)
        done.append(name)

    for name in sorted(tasks):
        visit(name)
    return done


def stage_statuses(namespace: dict[str, Any]) -> list[StageStatus]:
    """Each stage on its own: up to date, or stale and why (what `doit` would find)."""
    tasks, doit_config = _load(namespace)
    dep_manager = Dependency(SyncedJsonDB, doit_config["dep_file"], checker_cls=MD5Checker)
    result = []
    for name in ordered(tasks):
        status, reasons = task_reasons(tasks[name], dep_manager, tasks)
        result.append(StageStatus(name, status, tuple(reasons)))
    return result


def plan(namespace: dict[str, Any], targets: Iterable[str]) -> list[StageStatus]:
    """A dry run: the stages that building `targets` will run, with upstream changes passed
    downstream (a stage whose input is being rebuilt will run too). Conservative: a rebuilt
    input that turns out byte-identical would in fact stop the cascade."""
    tasks, _ = _load(namespace)
    statuses = {s.name: s for s in stage_statuses(namespace)}
    needed: list[str] = []

    def collect(name: str) -> None:
        for dep in upstream(tasks[name], tasks):
            collect(dep)
        if name not in needed:
            needed.append(name)

    for target in targets:
        collect(target)
    result: list[StageStatus] = []
    running: set[str] = set()
    for name in needed:
        own = statuses[name]
        inherited = [f"{dep} will rebuild" for dep in upstream(tasks[name], tasks) if dep in running]
        if own.status != "up-to-date" or inherited:
            running.add(name)
            reasons = own.reasons if own.status != "up-to-date" else ()
            result.append(StageStatus(name, "run", tuple(reasons) + tuple(inherited)))
        else:
            result.append(StageStatus(name, "up-to-date", ()))
    return result


def dag_lines(namespace: dict[str, Any], mermaid: bool = False) -> list[str]:
    """The stages and the artifacts they read and write, as text or a Mermaid flowchart."""
    tasks, _ = _load(namespace)
    names = ordered(tasks)
    if not mermaid:
        lines = []
        for name in names:
            task = tasks[name]
            needs = ", ".join(upstream(task, tasks)) or "-"
            writes = ", ".join(_short(t) for t in task.targets)
            lines.append(f"{name}: after {needs}; writes {writes}")
        return lines
    lines = ["flowchart LR"]
    nodes: dict[str, str] = {}
    producer: dict[str, str] = {}
    for name in names:
        lines.append(f"    {name}([{name}])")
    for name in names:
        for target in tasks[name].targets:
            nodes[target], producer[target] = f"a{len(nodes) + 1}", name
            lines.append(f"    {name} --> {nodes[target]}[{_short(target)}]")
    for name in names:
        fed_by = set()
        for dep in sorted(tasks[name].file_dep):
            if dep in nodes:
                lines.append(f"    {nodes[dep]} --> {name}")
                fed_by.add(producer[dep])
        for dep in upstream(tasks[name], tasks):
            if dep not in fed_by:  # an order-only dependency, with no artifact between
                lines.append(f"    {dep} -.-> {name}")
    return lines


class ExplainingReporter(ConsoleReporter):  # type: ignore[misc]
    """doit's console reporter, on stderr, saying why each stage runs and ending with a summary."""

    desc = "says why each stage runs (imessage-finetune)"
    run_options = RunOptions()

    @classmethod
    def with_options(cls, options: RunOptions) -> type[ExplainingReporter]:
        """This reporter for a run with `options` (doit builds reporters from a class)."""
        return type(cls.__name__, (cls,), {"run_options": options})

    def __init__(self, outstream: TextIO, options: dict[str, Any]) -> None:
        super().__init__(sys.stderr, options)
        self.tasks: dict[str, Task] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.started = time.monotonic()
        self.verbosity = self.run_options.verbosity

    def initialize(self, tasks: dict[str, Task], selected_tasks: list[str]) -> None:
        self.tasks = tasks
        self.started = time.monotonic()

    def write(self, text: str) -> None:
        if self.verbosity > 0:
            super().write(text)

    def execute_task(self, task: Task) -> None:
        reasons: list[str] = []
        if Globals.dep_manager is not None:
            _, reasons = task_reasons(task, Globals.dep_manager, self.tasks)
        self.write(f"{task.name}: running ({'; '.join(reasons) or 'forced'})\n")
        self.ran.append(task.name)

    def skip_uptodate(self, task: Task) -> None:
        detail = " (inputs, settings, code and outputs unchanged)" if self.verbosity > 1 else ""
        self.write(f"{task.name}: up to date{detail}\n")
        self.skipped.append(task.name)

    def complete_run(self) -> None:
        super().complete_run()
        self.verbosity = max(self.verbosity, 1)  # the closing summary is always shown
        elapsed = time.monotonic() - self.started
        failed = len(self.failures) + len(self.runtime_errors)
        if failed:
            self.write(
                f"failed: {failed} stage(s) failed; {len(self.ran) - failed} ran, "
                f"{len(self.skipped)} up to date ({elapsed:.1f} s)\n"
            )
        elif self.ran:
            self.write(
                f"done: {len(self.ran)} stage(s) rebuilt ({', '.join(self.ran)}), "
                f"{len(self.skipped)} up to date ({elapsed:.1f} s)\n"
            )
        else:
            self.write(f"done: everything is up to date ({elapsed:.1f} s)\n")
