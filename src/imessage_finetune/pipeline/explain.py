"""Why a stage runs: reasons for each stage, a status table, a real dry run, and the DAG
(the reporter that says it during a run is `reporter.py`).

doit decides staleness; this module asks doit's own dependency manager for the reasons
(`get_status(..., get_log=True)`) and lets each of our uptodate checks describe what changed
(`explain(values)`), so a run says "dataset.ai_sender: 'me' -> 'Tortoise'" rather than
"uptodate check false".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doit.control import TaskControl
from doit.dependency import Dependency, MD5Checker
from doit.loader import load_doit_config, load_tasks
from doit.task import Task

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
    """doit's status of one task and the human reasons behind it.

    doit calls a task whose input file is missing an "error"; when another stage builds
    that file (after `doit clean`, or before the first build), the task is only stale.
    """
    status = dep_manager.get_status(task, tasks, get_log=True)
    values = dep_manager.get_values(task.name)
    producers = {target: t.name for t in tasks.values() for target in t.targets}
    reasons: list[str] = []
    for utd, _args, _kwargs in status.reasons.get("uptodate_false", []):
        explain = getattr(utd, "explain", None)
        reasons += explain(values) if explain else ["an up-to-date check failed"]
    for target in status.reasons.get("missing_target", []):
        reasons.append(f"{_short(target)} is missing")
    if status.reasons.get("changed_file_dep"):
        reasons.append("input changed: " + ", ".join(_short(p) for p in sorted(status.reasons["changed_file_dep"])))
    missing = status.reasons.get("missing_file_dep", [])
    for path in missing:
        maker = producers.get(path)
        reasons.append(f"input missing: {_short(path)}" + (f" ({maker} builds it)" if maker else ""))
    if status.reasons.get("added_file_dep") or status.reasons.get("removed_file_dep"):
        reasons.append("its list of inputs changed")
    if status.reasons.get("checker_changed"):
        reasons.append("the way inputs are compared changed")
    result = status.status
    if result == "error" and all(path in producers for path in missing):
        result = "run"
    if result == "run" and (not reasons or "never built" in reasons):
        reasons = ["never built"]
    return result, list(dict.fromkeys(reasons))


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
    # The file_dep check the pipeline's doit runs with (a different one reads as stale).
    checker = doit_config.get("check_file_uptodate", MD5Checker)
    dep_manager = Dependency(SyncedJsonDB, doit_config["dep_file"], checker_cls=checker)
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
