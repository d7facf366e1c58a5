"""The pipeline as doit tasks: one generic task per declared stage (`stages/`).

`dodo.py` and the CLI both load the namespace `doit_namespace(config, options)` returns, so
`doit sessions` and `imessage-finetune run sessions` run the same code. Building it reads
nothing but stats and writes nothing: `status`, `plan` and `dag` use it too.

Each stage's task is stale when its inputs' content, its declared config keys, its code
(every package module it imports) and versions, or its published targets changed
(`fingerprint.py`). doit's state is a JSON file in the artifacts folder, saved atomically after
every change (`doit_state.py`); each good build is recorded in pipeline.lock.json.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain
from doit.exceptions import TaskFailed
from doit.globals import Globals

from imessage_finetune import artifacts, stages
from imessage_finetune.config import Config, RunOptions, config_keys, find_config, load_config
from imessage_finetune.errors import FinetuneError, Interrupted
from imessage_finetune.pipeline import run_lock
from imessage_finetune.pipeline.console import Console
from imessage_finetune.pipeline.doit_state import BACKEND_NAME, make_crash_safe
from imessage_finetune.pipeline.fingerprint import (
    DigestChecker,
    FilesUnchanged,
    Forced,
    StageFingerprint,
    files_state,
    module_file,
)
from imessage_finetune.pipeline.lockfile import lock_path, record_stage
from imessage_finetune.pipeline.reporter import ExplainingReporter, RunStopped, StageInterrupted
from imessage_finetune.stages.stage import Stage, StageContext

DEFAULT_TARGET = "dataset"  # what `doit` alone builds: everything before anything is sent


def load_project_config(project_dir: Path) -> Config:
    """The config for a project folder (honouring IMESSAGE_FINETUNE_CONFIG)."""
    return load_config(find_config(project_dir))


def active_stages(config: Config) -> list[Stage]:
    """The registered stages that apply to this configuration, in order."""
    return [stage for stage in stages.STAGES if stage.applies(config)]


def run_doit(config: Config, argv: list[str], options: RunOptions | None = None) -> int:
    """Run doit on the pipeline of `config` (argv as for the `doit` command); its exit code
    (130 after Ctrl-C). The artifacts folder's lock is released when it returns."""
    loader = ModuleTaskLoader(doit_namespace(config, options))
    try:
        return int(DoitMain(loader, config_filenames=()).run(argv) or 0)
    except RunStopped as stopped:
        return int(stopped.code or 0)
    finally:
        run_lock.release_all()


def doit_namespace(config: Config, options: RunOptions | None = None) -> dict[str, Any]:
    """DOIT_CONFIG and one task creator per stage that applies (nothing is written)."""
    options = options or RunOptions.from_environ()
    active = active_stages(config)
    names = {stage.name for stage in active}
    namespace: dict[str, Any] = {
        "DOIT_CONFIG": {
            "backend": BACKEND_NAME,
            "dep_file": str(artifacts.state_file(config.artifacts_dir)),
            # file_dep compared by the sha256 the lock file and fingerprints use, each file
            # version hashed once per process (doit's md5 hashed the snapshot's copy of chat.db
            # once more after the lock file had).
            "check_file_uptodate": DigestChecker,
            "default_tasks": [DEFAULT_TARGET],
            "verbosity": 2,
            "reporter": ExplainingReporter.bound(options, config.artifacts_dir, config.artifacts.lock_timeout),
        }
    }
    for stage in active:
        namespace[f"task_{stage.name}"] = stage_task(config, stage, options, names)
    return namespace


def stage_task(config: Config, stage: Stage, options: RunOptions, active: set[str]) -> Callable[[], dict[str, Any]]:
    """The doit task creator of one declared stage.

    The stage is stale when its inputs (the artifacts it reads, the schemas of those it
    writes, and `watched` files compared by content), its declared keys and parameters, its
    code or its published targets changed. A FinetuneError becomes a one-line failure that
    says what to do; a success is recorded in pipeline.lock.json.
    """
    view = stage.view(config)
    root = config.artifacts_dir
    outputs = stage.outputs(view)
    targets = [artifact.path(root) for artifact in outputs]
    schemas = sorted({artifact.schema_path for artifact in outputs if artifact.schema_path is not None})
    file_dep = [artifact.path(root) for artifact in stage.inputs(view)] + schemas
    watched = list(stage.watched(view)) if stage.watched else []
    params: dict[str, Any] = {}
    for key in stage.key_list(config):
        value = view.get(key)
        if dataclasses.is_dataclass(value):  # a whole table declared: each of its keys
            params.update({leaf: view.get(leaf) for leaf in config_keys(value, key)})
        else:
            params[key] = value
    if stage.params is not None:
        params.update(stage.params(view))
    code = [module_file(stage.run), *(module_file(name) for name in stage.code_modules(view))]
    fingerprint = StageFingerprint(stage.name, params, code)
    uptodate: list[Any] = [Forced(True)] if stage.name in options.forced else []
    if watched:
        uptodate.append(FilesUnchanged("source", watched, save_after=False))
    uptodate += [fingerprint, FilesUnchanged("targets", targets, save_after=True)]

    def action() -> Any:
        console = Console(options)
        context = StageContext(stage.name, view, options, console)
        try:
            if stage.check is not None:
                stage.check(context)  # before anything is written
            # Taken when the run began (by the reporter); here for runs with another reporter.
            run_lock.hold(root, config.artifacts.lock_timeout, console.say)
            # Recorded before reading, so a change made while the stage reads triggers the next run.
            source_state = files_state(watched) if watched else None
            started = time.monotonic()
            stage.run(context)
        except Interrupted as exc:
            return StageInterrupted(str(exc))
        except FinetuneError as exc:
            return TaskFailed(str(exc))
        record_stage(
            lock_path(root),
            stage.name,
            root=root,
            inputs=[*file_dep, *watched],
            outputs=targets,
            fingerprint=fingerprint.current,
            seconds=time.monotonic() - started,
        )
        return {"source": source_state} if watched else None

    action.__name__ = action.__qualname__ = stage.name

    def creator() -> dict[str, Any]:
        # doit has opened its state by now: make its saving atomic, after every change.
        make_crash_safe(Globals.dep_manager)
        return {
            "actions": [action],
            "file_dep": list(file_dep),
            "targets": targets,
            "task_dep": [name for name in stage.after if name in active],
            "uptodate": uptodate,
            # Receipts of remote work are never removed by `doit clean` (see `forget`).
            "clean": [] if stage.keep_on_clean else True,
        }

    creator.__doc__ = stage.doc
    return creator
