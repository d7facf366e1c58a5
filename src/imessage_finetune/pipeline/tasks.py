"""The pipeline as doit tasks: thin wrappers that call the stage functions and report.

`dodo.py` and the CLI both load the namespace `doit_namespace(config)` returns, so
`doit sessions` and `imessage-finetune run sessions` run the same code. doit's state is
a JSON file in the artifacts folder, saved after every change (`doit_state.py`). Each task's staleness is its inputs'
content, its own config section, its code and versions, and its targets' integrity
(see `fingerprint.py`).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from doit.cmd_base import ModuleTaskLoader
from doit.doit_cmd import DoitMain
from doit.exceptions import TaskFailed

from imessage_finetune import artifacts
from imessage_finetune.atomic import clean_stale_temporaries
from imessage_finetune.config import Config, find_config, load_config
from imessage_finetune.pipeline.doit_state import BACKEND_NAME, DOIT_PLUGINS
from imessage_finetune.pipeline.explain import ExplainingReporter, verbosity
from imessage_finetune.errors import FinetuneError, FineTuneError
from imessage_finetune.jsonio import load_json
from imessage_finetune.pipeline.fingerprint import FilesUnchanged, StageFingerprint, files_state, package_versions
from imessage_finetune.pipeline.lockfile import lock_path, record_stage
from imessage_finetune.sources.contacts import contacts_sources
from imessage_finetune.stages.snapshot import source_files, take_snapshot, write_contacts

# [dataset] keys that only the dataset stage reads; every other key shapes merged.json too.
DATASET_ONLY_KEYS = ("validation_share", "split_seed")
# [finetune] keys the dataset report depends on (tokenizer, limit, billed tokens, cost).
DATASET_FINETUNE_KEYS = ("model", "n_epochs", "price_per_million_tokens")


def say(text: str) -> None:
    """Chatter for the person running the pipeline: stderr, never stdout; silent when quiet."""
    if verbosity() > 0:
        print(text, file=sys.stderr, flush=True)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress callback drawing a bar on stderr, only on a terminal and when not quiet."""
    if verbosity() == 0 or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=1, label=label, file=sys.stderr) as bar:

        def update(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        yield update


def run_doit(config: Config, argv: list[str]) -> int:
    """Run doit on the pipeline of `config` (argv as for the `doit` command); its exit code."""
    loader = ModuleTaskLoader(doit_namespace(config))
    return int(DoitMain(loader, config_filenames=(), extra_config=DOIT_PLUGINS).run(argv) or 0)


def load_project_config(project_dir: Path) -> Config:
    """The config for a project folder (honouring IMESSAGE_FINETUNE_CONFIG)."""
    return load_config(find_config(project_dir))


class Pipeline:
    """The artifact paths and inputs of one configured project."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dir = config.artifacts_dir

    def path(self, artifact: artifacts.Artifact) -> Path:
        """Where an artifact of this project lives."""
        return artifact.path(self.dir)

    @property
    def demo_dir(self) -> Path:
        """The folder the built-in demo database is generated into."""
        return artifacts.demo_source_dir(self.dir)

    def source(self) -> Path:
        """The chat.db the snapshot copies."""
        if self.config.uses_demo:
            return self.demo_dir / artifacts.DEMO_CHAT_DB
        return self.config.source_path()

    def contacts(self) -> list[Path]:
        """The Contacts databases that name the handles."""
        explicit = self.config.contacts_paths()
        if self.config.uses_demo and explicit is None:
            return [self.demo_dir / artifacts.DEMO_ADDRESSBOOK]
        return contacts_sources(explicit)

    def build_demo_if_missing(self) -> None:
        """Generate the demo database for commands that read it outside the pipeline."""
        if not self.source().exists():
            from imessage_finetune.fixtures.demo import build_demo

            self.prepare()
            build_demo(self.demo_dir)

    def prepare(self) -> None:
        """Create the private artifacts folder and remove what a killed run left.

        Also makes every file this process creates from now on private (umask 077), doit's
        state file included, which doit writes with default permissions.
        """
        os.umask(0o077)
        artifacts.ensure_private_dir(self.dir)
        clean_stale_temporaries(self.dir)


def stage_task(
    pipe: Pipeline,
    name: str,
    run: Callable[[], dict[str, Any] | None],
    *,
    doc: str,
    params: dict[str, Any],
    targets: list[Path],
    file_dep: Sequence[Path] = (),
    watched: list[Path] | None = None,
    task_dep: Sequence[str] = (),
    module: str | None = None,
    clean: bool = True,
) -> Callable[[], dict[str, Any]]:
    """A doit task creator for one stage.

    The stage is stale when its inputs (`file_dep`, and `watched` files compared by content
    for a live source), its parameters, its code or its published targets changed. A
    FinetuneError becomes a one-line failure that says what to do; a success is recorded in
    pipeline.lock.json.
    """
    fingerprint = StageFingerprint(name, params, module or f"stages/{name}.py")
    uptodate: list[Any] = [FilesUnchanged("source", watched, save_after=False)] if watched else []
    uptodate += [fingerprint, FilesUnchanged("targets", targets, save_after=True)]

    def action() -> Any:
        started = time.monotonic()
        try:
            values = run()
        except FinetuneError as exc:
            return TaskFailed(str(exc))
        record_stage(
            lock_path(pipe.dir),
            name,
            root=pipe.dir,
            inputs=[*file_dep, *(watched or [])],
            outputs=targets,
            fingerprint=fingerprint.current,
            seconds=time.monotonic() - started,
        )
        return values

    action.__name__ = action.__qualname__ = name

    def creator() -> dict[str, Any]:
        return {
            "actions": [action],
            "file_dep": list(file_dep),
            "targets": targets,
            "task_dep": list(task_dep),
            "uptodate": uptodate,
            # Receipts of remote work are never removed by `doit clean` (see `forget`).
            "clean": True if clean else [],
        }

    creator.__doc__ = doc
    return creator


def doit_namespace(config: Config) -> dict[str, Any]:
    """DOIT_CONFIG and the task creators for a configured project."""
    pipe = Pipeline(config)
    pipe.prepare()
    snapshot_path = pipe.path(artifacts.SNAPSHOT)
    contacts_path = pipe.path(artifacts.CONTACTS)
    sessions_path = pipe.path(artifacts.SESSIONS)
    merged_path = pipe.path(artifacts.MERGED)
    namespace: dict[str, Any] = {
        "DOIT_CONFIG": {
            "backend": BACKEND_NAME,
            "dep_file": str(artifacts.state_file(pipe.dir)),
            "default_tasks": ["dataset"],
            "verbosity": 2,
            "reporter": ExplainingReporter,
        }
    }

    if config.uses_demo:
        from imessage_finetune.fixtures.demo import DEMO_VERSION, build_demo

        def demo() -> None:
            pipe.prepare()
            paths = build_demo(pipe.demo_dir)
            say(f"demo: built the demonstration database {paths.chat_db}")

        namespace["task_demo"] = stage_task(
            pipe,
            "demo",
            demo,
            doc="Generate the built-in demo chat.db and Contacts database.",
            params={"demo_version": DEMO_VERSION},
            targets=[pipe.demo_dir / artifacts.DEMO_CHAT_DB, pipe.demo_dir / artifacts.DEMO_ADDRESSBOOK],
            module="fixtures/demo.py",
        )

    def snapshot() -> dict[str, Any]:
        pipe.prepare()
        # Recorded before reading, so a change made while copying triggers the next rebuild.
        state = files_state(watched)
        summary = take_snapshot(pipe.source(), snapshot_path, busy_timeout=config.source.busy_timeout)
        people = write_contacts(pipe.contacts(), contacts_path, busy_timeout=config.source.busy_timeout)
        say(
            f"snapshot: {summary.messages} messages in {summary.chats} chats"
            f"{'' if summary.changed else ' (content unchanged)'}; "
            f"{people.names} contact handles from {people.sources} Contacts database(s)"
        )
        return {"source": state}

    watched = source_files(pipe.source()) + pipe.contacts()
    namespace["task_snapshot"] = stage_task(
        pipe,
        "snapshot",
        snapshot,
        doc="Copy chat.db (WAL included, read-only) and read the Contacts names.",
        params={"source": str(pipe.source()), "contacts": [str(p) for p in pipe.contacts()]},
        targets=[snapshot_path, contacts_path],
        file_dep=[_schema(artifacts.CONTACTS)],
        watched=watched,
        task_dep=["demo"] if config.uses_demo else [],
    )

    def sessions() -> None:
        from imessage_finetune.stages.sessions import load_contacts, reader_options, write_sessions

        pipe.prepare()
        with progress_bar("sessions") as progress:
            stats = write_sessions(
                snapshot_path, load_contacts(contacts_path), sessions_path, reader_options(config), progress
            )
        excluded = ", ".join(f"{k} {v}" for k, v in sorted(stats.excluded.items())) or "none"
        say(
            f"sessions: {stats.messages_kept} messages in {stats.chats_kept} of {stats.chats} "
            f"chats -> {sessions_path}; left out: {excluded}"
        )

    namespace["task_sessions"] = stage_task(
        pipe,
        "sessions",
        sessions,
        doc="Read the snapshot into sessions.json (LangChain messages_to_dict form).",
        params=config.section("sessions"),
        targets=[sessions_path],
        file_dep=[snapshot_path, contacts_path, _schema(artifacts.SESSIONS)],
    )

    def merged() -> None:
        from imessage_finetune.stages.merged import write_merged
        from imessage_finetune.tokens import counter_for

        pipe.prepare()
        stats = write_merged(sessions_path, merged_path, config.dataset, counter_for(config.finetune.model))
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items())) or "none"
        say(
            f"merged: {stats.messages_in} messages -> {stats.turns} turns in {stats.examples} "
            f"examples (AI side: {config.dataset.ai_sender}); dropped: {dropped}"
        )

    merged_params = {k: v for k, v in config.section("dataset").items() if k not in DATASET_ONLY_KEYS}
    namespace["task_merged"] = stage_task(
        pipe,
        "merged",
        merged,
        doc="Merge runs, choose the AI voice, cut sessions and windows into merged.json.",
        params={**merged_params, "model": config.finetune.model},
        targets=[merged_path],
        file_dep=[sessions_path, _schema(artifacts.MERGED)],
    )

    def dataset() -> None:
        from imessage_finetune.stages.dataset import write_dataset
        from imessage_finetune.tokens import counter_for

        pipe.prepare()
        summary = write_dataset(
            merged_path,
            pipe.dir,
            config.dataset,
            config.finetune,
            counter_for(config.finetune.model),
        )
        for line in report_lines(summary.report, sends=config.finetune.backend != "local"):
            say(line)

    dataset_targets = [pipe.path(artifacts.TRAIN), pipe.path(artifacts.DATASET_REPORT)]
    if config.dataset.validation_share > 0:
        dataset_targets.append(pipe.path(artifacts.VALIDATION))
    dataset_params = {k: config.section("dataset")[k] for k in (*DATASET_ONLY_KEYS, "system_prompt")}
    namespace["task_dataset"] = stage_task(
        pipe,
        "dataset",
        dataset,
        doc="Write train.jsonl (checked against OpenAI's rules) and dataset-report.json.",
        params={**dataset_params, **{k: config.section("finetune")[k] for k in DATASET_FINETUNE_KEYS}},
        targets=dataset_targets,
        file_dep=[merged_path, _schema(artifacts.TRAIN), _schema(artifacts.DATASET_REPORT)],
    )
    add_finetune_tasks(namespace, pipe, dataset_targets)
    return namespace


YES_ENV = "IMESSAGE_FINETUNE_YES"  # set by `run --yes`: skip the confirmation once


def confirm_sending(disclosure: Any, config: Config) -> None:
    """Show what will leave the machine and ask, unless confirmation is switched off."""
    from imessage_finetune.backends.openai.upload import FineTuneSetupError, calendar_notice

    cost = disclosure.estimated_cost_usd
    say(
        f"upload: about to send {', '.join(disclosure.files)} to {disclosure.endpoint}: "
        f"{disclosure.examples} examples"
        + (f" (+{disclosure.validation_examples} validation)" if disclosure.validation_examples else "")
        + f" from {disclosure.conversations} conversations, {disclosure.tokens} tokens, "
        f"estimated cost {'$%.2f' % cost if cost is not None else 'unknown'}"
    )
    for line in calendar_notice(config.finetune, datetime.date.today()):
        say(f"upload: {line}")
    if not config.finetune.confirm or os.environ.get(YES_ENV) == "1":
        return
    if not sys.stdin.isatty():
        raise FineTuneSetupError(
            "sending your messages needs a confirmation and there is no terminal to ask on: "
            "run `imessage-finetune run train --yes`, or set [finetune] confirm = false; "
            "nothing was sent"
        )
    if not click.confirm("Send these files?", default=False, err=True):
        raise FineTuneSetupError("not confirmed; nothing was sent")


def add_finetune_tasks(namespace: dict[str, Any], pipe: Pipeline, dataset_targets: list[Path]) -> None:
    """The fine-tuning stages: train on this machine, or upload (receipt) and train (model id)."""
    if pipe.config.finetune.backend == "local":
        add_local_train_task(namespace, pipe, dataset_targets)
        return
    from imessage_finetune.stages.model import TRAINING_KEYS, recorded_job_id, train
    from imessage_finetune.backends.openai.upload import check_before_sending, endpoint, make_backend, upload_files

    config = pipe.config
    upload_path = pipe.path(artifacts.UPLOAD)
    model_path = pipe.path(artifacts.MODEL)

    def upload() -> None:
        pipe.prepare()
        backend = make_backend(config)  # no key: stop here, before anything is shown or sent
        disclosure = check_before_sending(pipe.dir, config.finetune)
        confirm_sending(disclosure, config)
        receipt, reused = upload_files(backend, pipe.dir, config.finetune)
        files = ", ".join(f"{k} {v['id']}" for k, v in receipt["files"].items())
        say(f"upload: {files}" + (f" (already there, not sent again: {', '.join(reused)})" if reused else ""))

    namespace["task_upload"] = stage_task(
        pipe,
        "upload",
        upload,
        doc="Send train.jsonl to the fine-tuning service (asks first); writes upload.json.",
        params={"backend": config.finetune.backend, "endpoint": endpoint(config.finetune)},
        targets=[upload_path],
        file_dep=dataset_targets,
        module="backends/openai/upload.py",
        clean=False,
    )

    def train_stage() -> None:
        pipe.prepare()
        backend = make_backend(config)
        receipt = load_json(upload_path.read_bytes())

        def started(job: Any, created: bool) -> None:
            verb = "started" if created else "re-attached to"
            say(f"train: {verb} job {job.id} ({job.status}); Ctrl-C stops following it, not the job")

        def retrying(failure: Any) -> None:
            # An outage of the service is not the job's: say so and keep following.
            delay = f"{failure.delay:.0f} s" if failure.delay >= 1 else f"{failure.delay:.2g} s"
            say(
                f"train: {failure.error}; trying again in {delay} ({failure.failures} failed read(s) "
                f"in a row; the job runs on, followed for up to {failure.remaining / 3600:.1f} h more)"
            )

        try:
            with progress_bar("train") as progress:

                def event(e: Any) -> None:
                    if e.step is None:
                        say(f"train: {e.message}")
                        return
                    say(f"train: step {e.step}, training loss {e.train_loss}")
                    if progress and e.total_steps:
                        progress(e.step, e.total_steps)

                model = train(
                    backend,
                    receipt,
                    config.finetune,
                    pipe.dir,
                    on_start=started,
                    on_status=lambda job: say(f"train: job {job.id} is {job.status}"),
                    on_event=event,
                    on_retry=retrying,
                )
        except KeyboardInterrupt:
            job_id = recorded_job_id(pipe.dir)
            raise FineTuneError(
                f"stopped following job {job_id}; it keeps running at the service. Run "
                f"`doit train` again to resume, or `imessage-finetune jobs cancel {job_id}` to stop it"
            ) from None
        say(f"train: fine-tuned model {model['model_id']} ({model['trained_tokens']} trained tokens)")
        say("train: talk to it with `imessage-finetune chat`")

    namespace["task_train"] = stage_task(
        pipe,
        "train",
        train_stage,
        doc="Fine-tune on the uploaded files (one job, resumed if interrupted); writes model.json.",
        params={**{k: config.section("finetune")[k] for k in TRAINING_KEYS}, "endpoint": endpoint(config.finetune)},
        targets=[model_path],
        file_dep=[upload_path],
        module="stages/model.py",
        clean=False,
    )


def add_local_train_task(namespace: dict[str, Any], pipe: Pipeline, dataset_targets: list[Path]) -> None:
    """The local stage: a LoRA adapter trained here from train.jsonl; nothing is uploaded."""
    from imessage_finetune.backends.local.base_model import folder_files
    from imessage_finetune.stages.model import DEMO_NOTICE, LOCAL_LIBRARIES, local_training_params, train_local

    config = pipe.config
    adapter = pipe.path(artifacts.ADAPTER)
    base_files = folder_files(config.finetune.local.base_model, config.base_dir)

    def train_stage() -> dict[str, Any]:
        pipe.prepare()
        base_state = files_state(base_files)  # what this run trains on, recorded before it reads
        if config.finetune.local.is_demo:
            say(f"train: {DEMO_NOTICE}")
        else:
            say(f"train: loading {config.finetune.local.base_model} (downloaded into the Hugging Face cache the first time)")
        every = 1  # steps between two lines of progress, when no bar is drawn
        with progress_bar("train") as progress:

            def started(device: str, examples: int, steps: int) -> None:
                nonlocal every
                every = 1 if verbosity() > 1 else max(1, steps // 10)
                say(f"train: {examples} examples, {steps} steps on {device} ({config.finetune.local.base_model})")

            def event(e: Any) -> None:
                if progress:
                    progress(e.step, e.total_steps)
                elif e.step % every == 0 or e.step == e.total_steps:
                    say(f"train: step {e.step}/{e.total_steps} (epoch {e.epoch}), training loss {e.loss}")

            model = train_local(
                config,
                pipe.dir,
                on_start=started,
                on_event=event,
                on_resume=lambda step, total: say(f"train: resuming from the checkpoint at step {step} of {total}"),
            )
        validation = (
            f", validation loss {model['validation_loss_start']} -> {model['validation_loss']}"
            if model["validation_loss"] is not None
            else ""
        )
        say(
            f"train: adapter {adapter} ({model['steps']} steps; loss on training examples "
            f"{model['train_loss_start']} -> {model['train_loss']}{validation})"
        )
        say("train: talk to it with `imessage-finetune chat`")
        return {"source": base_state}

    namespace["task_train"] = stage_task(
        pipe,
        "train",
        train_stage,
        doc="Fine-tune a LoRA adapter on this machine from train.jsonl; writes model.json.",
        params={"backend": "local", **local_training_params(config), "libraries": package_versions(LOCAL_LIBRARIES)},
        targets=[pipe.path(artifacts.MODEL), *(adapter / name for name in artifacts.ADAPTER_FILES)],
        file_dep=dataset_targets,
        watched=base_files,
        module="stages/model.py",
        clean=False,
    )


def _schema(artifact: artifacts.Artifact) -> Path:
    assert artifact.schema_path is not None, f"{artifact.name} has no schema"
    return artifact.schema_path


def report_lines(report: dict[str, Any], *, sends: bool = True) -> list[str]:
    """The dataset report as a few lines for the terminal (`sends`: the backend is remote)."""
    tokens = report["tokens_per_example"] or {"min": 0, "median": 0, "p95": 0, "max": 0}
    cost = report["estimated_cost_usd"]
    price = f"${cost:.2f}" if cost is not None else "unknown (no price for this model in config)"
    tokenizer = report["tokenizer"]
    label = tokenizer["encoding"] if tokenizer["exact"] else "ESTIMATE (tokenizer unavailable)"
    dropped = report["dropped"]
    left_out = ", ".join(
        f"{k} {v}" for part in ("sessions", "chats", "merged") for k, v in dropped[part].items()
    )
    return [
        f"dataset: {report['examples']['train']} training examples"
        + (f" + {report['examples']['validation']} validation" if report["examples"]["validation"] else "")
        + f", {report['messages']} messages, {report['tokens_total']} tokens ({label})",
        f"  tokens per example: min {tokens['min']}, median {tokens['median']}, p95 {tokens['p95']}, "
        f"max {tokens['max']}; over the {report['token_limit']} limit: {report['examples_over_limit']}",
        f"  {report['model']}, {report['n_epochs']} epochs: {report['billed_tokens']} billed tokens, "
        f"estimated cost {price}" + ("" if sends else " if sent to OpenAI (the local backend sends nothing)"),
        f"  left out: {left_out or 'nothing'}",
    ]
