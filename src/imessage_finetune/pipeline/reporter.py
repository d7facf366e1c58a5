"""What a run says, on stderr: why each stage runs, and one closing line that tells the truth.

The reporter is also where a run begins and ends: it takes the artifacts folder's lock
(`run_lock.py`) before doit looks at any stage, and releases it last; and it catches Ctrl-C
anywhere in the run (a stage, doit's own checks, importing PyTorch) so that the run ends
with one line saying what was finished and what was not, and exit status 130.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from doit.exceptions import TaskFailed
from doit.globals import Globals
from doit.reporter import ConsoleReporter
from doit.task import Task

from imessage_finetune.config import RunOptions
from imessage_finetune.errors import FinetuneError
from imessage_finetune.pipeline import run_lock
from imessage_finetune.pipeline.doit_state import reload_state
from imessage_finetune.pipeline.explain import task_reasons, upstream

INTERRUPTED = 130  # the exit status of a process stopped by SIGINT


class StageInterrupted(TaskFailed):
    """A stage that Ctrl-C stopped at a safe point (an `Interrupted` error): the run ends as
    interrupted, with the stage's own words on what was kept."""


class RunStopped(SystemExit):
    """The run stops with `code` after its reporter said why in one line (another build held
    the lock, or Ctrl-C). A SystemExit, so that plain `doit` exits without a traceback."""


class ExplainingReporter(ConsoleReporter):
    """doit's console reporter, on stderr, saying why each stage runs and ending with a summary."""

    desc = "says why each stage runs (imessage-finetune)"
    run_options = RunOptions()
    artifacts_dir: Path | None = None
    lock_timeout = 600.0

    @classmethod
    def bound(cls, options: RunOptions, artifacts_dir: Path, lock_timeout: float) -> type[ExplainingReporter]:
        """This reporter for a run of the pipeline in `artifacts_dir` (doit builds reporters
        from a class, so the run's settings are class attributes of a subclass)."""
        attributes = {"run_options": options, "artifacts_dir": artifacts_dir, "lock_timeout": lock_timeout}
        return type(cls.__name__, (cls,), attributes)

    def __init__(self, outstream: TextIO, options: dict[str, Any]) -> None:
        super().__init__(sys.stderr, options)
        self.tasks: dict[str, Task] = {}
        self.selected: list[str] = []
        self.running: str | None = None
        self.rebuilt: list[str] = []
        self.skipped: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.started = time.monotonic()
        self.verbosity = self.run_options.verbosity
        self.interrupted = False
        self._previous_handler: Any = None
        self._lock: run_lock.RunLock | None = None

    # -- the start and the end of a run ------------------------------------------------------

    def initialize(self, tasks: dict[str, Task], selected_tasks: list[str]) -> None:
        """doit: the run begins. Take the folder's lock, catch Ctrl-C from now on."""
        self.tasks, self.selected = tasks, list(selected_tasks)
        self.started = time.monotonic()
        if self.artifacts_dir is not None:
            try:
                self._lock = run_lock.hold(self.artifacts_dir, self.lock_timeout, self.say)
            except FinetuneError as exc:
                self.say(f"stopped: {exc}")
                self.verbosity = -1  # nothing ran: no summary
                raise RunStopped(1) from None
            reload_state(Globals.dep_manager)  # what a build we waited for recorded
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous_handler = signal.signal(signal.SIGINT, self._interrupt)

    def _interrupt(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        raise KeyboardInterrupt

    def complete_run(self) -> None:
        """doit: the run ended (however). Release the lock; say the closing line."""
        super().complete_run()
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
        if self._lock is not None:
            run_lock.release_all()
        if self.verbosity < 0:
            return
        self.verbosity = max(self.verbosity, 1)  # the closing summary is always shown
        self.write(self.summary() + "\n")
        if self.interrupted:
            raise RunStopped(INTERRUPTED)

    def summary(self) -> str:
        """One line: what was rebuilt, what was up to date, what failed or was stopped, and
        what did not run."""
        elapsed = f"({time.monotonic() - self.started:.1f} s)"
        rebuilt = f"{len(self.rebuilt)} stage(s) rebuilt" + (f" ({', '.join(self.rebuilt)})" if self.rebuilt else "")
        counts = f"{rebuilt}, {len(self.skipped)} up to date"
        pending = self._not_run()
        not_run = f"; not run: {', '.join(pending)}" if pending else ""
        if self.interrupted:
            stopped = (
                f"{self.running} stopped before it finished (nothing of it was written)" if self.running else "stopped"
            )
            if self.failed:  # stopped at a safe point: the stage says what it kept
                stopped = "; ".join(f"{name}: {message}" for name, message in self.failed)
            return f"interrupted: {stopped}; {counts}{not_run}; run again to go on {elapsed}"
        if self.failed or self.runtime_errors:
            what = "; ".join(f"{name}: {message}" for name, message in self.failed) or "doit could not run"
            return f"failed: {what}; {counts}{not_run} {elapsed}"
        if not self.rebuilt:
            return f"done: everything is up to date {elapsed}"
        return f"done: {counts} {elapsed}"

    def _not_run(self) -> list[str]:
        """The stages this run needed that neither ran nor were found up to date."""
        needed: list[str] = []

        def visit(name: str) -> None:
            if name in self.tasks and name not in needed:
                for dep in upstream(self.tasks[name], self.tasks):
                    visit(dep)
                needed.append(name)

        for name in self.selected:
            visit(name)
        settled = {*self.rebuilt, *self.skipped, *(name for name, _ in self.failed), self.running}
        return [name for name in needed if name not in settled]

    # -- each stage ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A line about the run (not about a stage)."""
        if self.verbosity > 0:
            super().write(text + "\n")

    def write(self, text: str) -> None:
        """Write to stderr, unless quiet."""
        if self.verbosity > 0:
            super().write(text)

    def execute_task(self, task: Task) -> None:
        """doit: a stage starts; say why."""
        reasons: list[str] = []
        if Globals.dep_manager is not None:
            _, reasons = task_reasons(task, Globals.dep_manager, self.tasks)
        self.write(f"{task.name}: running ({'; '.join(reasons) or 'forced'})\n")
        self.running = task.name

    def add_success(self, task: Task) -> None:
        """doit: a stage finished."""
        self.rebuilt.append(task.name)
        self.running = None

    def add_failure(self, task: Task, fail: Any) -> None:
        """doit: a stage failed."""
        # A stage's own failure (a FinetuneError) is one line in the summary; anything else
        # is a bug, shown with its traceback.
        message = fail.get_msg().strip()
        if isinstance(fail, StageInterrupted):
            self.interrupted = True
            self.failed.append((task.name, message))
        elif type(fail).__name__ == "TaskFailed":
            self.failed.append((task.name, message))
        else:
            super().add_failure(task, fail)
            self.failed.append((task.name, "an unexpected error (above); please report it"))
        self.running = None

    def skip_uptodate(self, task: Task) -> None:
        """doit: a stage is up to date."""
        detail = " (inputs, settings, code and outputs unchanged)" if self.verbosity > 1 else ""
        self.write(f"{task.name}: up to date{detail}\n")
        self.skipped.append(task.name)
