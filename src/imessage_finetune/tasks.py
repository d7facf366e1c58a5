"""The pipeline as doit tasks: thin wrappers that call the stage functions and report.

`dodo.py` and the CLI both load the namespace `doit_namespace(config)` returns, so
`doit sessions` and `imessage-finetune run sessions` run the same code. doit's state is
pinned to the JSON backend in the artifacts folder. Each task's staleness is its inputs'
content, its own config section, its code and versions, and its targets' integrity
(see `fingerprint.py`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import artifacts
from .atomic import clean_stale_temporaries
from .config import Config, find_config, load_config
from .errors import FinetuneError
from .fingerprint import FilesUnchanged, StageFingerprint, files_state
from .snapshot import contacts_sources, source_files, take_snapshot, write_contacts

# [dataset] keys that only the dataset stage reads; every other key shapes merged.json too.
DATASET_ONLY_KEYS = ("validation_share", "split_seed")


def say(text: str) -> None:
    """Chatter for the person running the pipeline: stderr, never stdout."""
    print(text, file=sys.stderr, flush=True)


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
            return self.demo_dir / "chat.db"
        return self.config.source_path()

    def contacts(self) -> list[Path]:
        """The Contacts databases that name the handles."""
        explicit = self.config.contacts_paths()
        if self.config.uses_demo and explicit is None:
            return [self.demo_dir / "AddressBook-v22.abcddb"]
        return contacts_sources(explicit)

    def build_demo_if_missing(self) -> None:
        """Generate the demo database for commands that read it outside the pipeline."""
        if not self.source().exists():
            from .demo import build_demo

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


def stage_action(function: Callable[[], dict[str, Any] | None]) -> Callable[[], Any]:
    """Run a stage; a FinetuneError becomes a one-line doit failure that says what to do."""

    def action() -> Any:
        try:
            return function()
        except FinetuneError as exc:
            return TaskFailed(str(exc))

    action.__name__ = action.__qualname__ = function.__name__
    return action


def doit_namespace(config: Config) -> dict[str, Any]:
    """DOIT_CONFIG and the task creators for a configured project."""
    pipe = Pipeline(config)
    pipe.prepare()
    snapshot_path = pipe.path(artifacts.SNAPSHOT)
    contacts_path = pipe.path(artifacts.CONTACTS)
    sessions_path = pipe.path(artifacts.SESSIONS)
    namespace: dict[str, Any] = {
        "DOIT_CONFIG": {
            "backend": "json",
            "dep_file": str(artifacts.state_file(pipe.dir)),
            "default_tasks": ["dataset"],
            "verbosity": 2,
        }
    }

    if config.uses_demo:
        from .demo import DEMO_VERSION, build_demo

        def build_demo_source() -> None:
            pipe.prepare()
            paths = build_demo(pipe.demo_dir)
            say(f"demo: built the demonstration database {paths.chat_db}")

        demo_targets = [pipe.demo_dir / "chat.db", pipe.demo_dir / "AddressBook-v22.abcddb"]

        def task_demo() -> dict[str, Any]:
            """Generate the built-in demo chat.db and Contacts database."""
            return {
                "actions": [stage_action(build_demo_source)],
                "targets": demo_targets,
                "uptodate": [
                    StageFingerprint("demo", {"demo_version": DEMO_VERSION}, "demo.py"),
                    FilesUnchanged("targets", demo_targets, save_after=True),
                ],
                "clean": True,
            }

        namespace["task_demo"] = task_demo

    source_inputs = source_files(pipe.source()) + pipe.contacts()

    def snapshot() -> dict[str, Any]:
        pipe.prepare()
        # Recorded before reading, so a change made while copying triggers the next rebuild.
        state = files_state(source_inputs)
        summary = take_snapshot(pipe.source(), snapshot_path, busy_timeout=config.source.busy_timeout)
        people = write_contacts(pipe.contacts(), contacts_path, busy_timeout=config.source.busy_timeout)
        say(
            f"snapshot: {summary.messages} messages in {summary.chats} chats"
            f"{'' if summary.changed else ' (content unchanged)'}; "
            f"{people.names} contact handles from {people.sources} Contacts database(s)"
        )
        return {"source": state}

    def task_snapshot() -> dict[str, Any]:
        """Copy chat.db (WAL included, read-only) and read the Contacts names."""
        params = {
            "source": str(pipe.source()),
            "contacts": [str(p) for p in pipe.contacts()],
        }
        return {
            "actions": [stage_action(snapshot)],
            "file_dep": [artifacts.CONTACTS.schema_path],
            "targets": [snapshot_path, contacts_path],
            "task_dep": ["demo"] if config.uses_demo else [],
            "uptodate": [
                FilesUnchanged("source", source_inputs, save_after=False),
                StageFingerprint("snapshot", params, "snapshot.py"),
                FilesUnchanged("targets", [snapshot_path, contacts_path], save_after=True),
            ],
            "clean": True,
        }

    def sessions() -> None:
        from .sessions import load_contacts, reader_options, write_sessions

        pipe.prepare()
        stats = write_sessions(
            snapshot_path, load_contacts(contacts_path), sessions_path, reader_options(config)
        )
        excluded = ", ".join(f"{k} {v}" for k, v in sorted(stats.excluded.items())) or "none"
        say(
            f"sessions: {stats.messages_kept} messages in {stats.chats_kept} of {stats.chats} "
            f"chats -> {sessions_path}; left out: {excluded}"
        )

    def task_sessions() -> dict[str, Any]:
        """Read the snapshot into sessions.json (LangChain messages_to_dict form)."""
        assert artifacts.SESSIONS.schema_path is not None
        return {
            "actions": [stage_action(sessions)],
            "file_dep": [snapshot_path, contacts_path, artifacts.SESSIONS.schema_path],
            "targets": [sessions_path],
            "uptodate": [
                StageFingerprint("sessions", config.section("sessions"), "sessions.py"),
                FilesUnchanged("targets", [sessions_path], save_after=True),
            ],
            "clean": True,
        }

    merged_path = pipe.path(artifacts.MERGED)

    def merged() -> None:
        from .merged import write_merged
        from .tokens import counter_for

        pipe.prepare()
        stats = write_merged(sessions_path, merged_path, config.dataset, counter_for(config.finetune.model))
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items())) or "none"
        say(
            f"merged: {stats.messages_in} messages -> {stats.turns} turns in {stats.examples} "
            f"examples (AI side: {config.dataset.ai_sender}); dropped: {dropped}"
        )

    def task_merged() -> dict[str, Any]:
        """Merge runs, choose the AI voice, cut sessions and windows into merged.json."""
        assert artifacts.MERGED.schema_path is not None
        params = {k: v for k, v in config.section("dataset").items() if k not in DATASET_ONLY_KEYS}
        params["model"] = config.finetune.model
        return {
            "actions": [stage_action(merged)],
            "file_dep": [sessions_path, artifacts.MERGED.schema_path],
            "targets": [merged_path],
            "uptodate": [
                StageFingerprint("merged", params, "merged.py"),
                FilesUnchanged("targets", [merged_path], save_after=True),
            ],
            "clean": True,
        }

    dataset_targets = [pipe.path(artifacts.TRAIN), pipe.path(artifacts.DATASET_REPORT)]
    if config.dataset.validation_share > 0:
        dataset_targets.append(pipe.path(artifacts.VALIDATION))

    def dataset() -> None:
        from .dataset import write_dataset
        from .tokens import counter_for

        pipe.prepare()
        summary = write_dataset(
            merged_path,
            sessions_path,
            pipe.dir,
            config.dataset,
            config.finetune,
            counter_for(config.finetune.model),
        )
        for line in report_lines(summary.report):
            say(line)

    def task_dataset() -> dict[str, Any]:
        """Write train.jsonl (checked against OpenAI's rules) and dataset-report.json."""
        schemas = [artifacts.TRAIN.schema_path, artifacts.DATASET_REPORT.schema_path]
        params = {k: config.section("dataset")[k] for k in (*DATASET_ONLY_KEYS, "system_prompt")}
        params.update(config.section("finetune"))
        return {
            "actions": [stage_action(dataset)],
            "file_dep": [merged_path, sessions_path, *schemas],
            "targets": dataset_targets,
            "uptodate": [
                StageFingerprint("dataset", params, "dataset.py"),
                FilesUnchanged("targets", dataset_targets, save_after=True),
            ],
            "clean": True,
        }

    namespace["task_snapshot"] = task_snapshot
    namespace["task_sessions"] = task_sessions
    namespace["task_merged"] = task_merged
    namespace["task_dataset"] = task_dataset
    return namespace


def report_lines(report: dict[str, Any]) -> list[str]:
    """The dataset report as a few lines for the terminal."""
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
        f"estimated cost {price}",
        f"  left out: {left_out or 'nothing'}",
    ]
