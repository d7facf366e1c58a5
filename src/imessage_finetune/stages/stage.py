"""What a stage is: its declaration (`Stage`), and the context it works in (`StageContext`).

A stage is declared once, in the module named after what it writes, as `STAGE = Stage(...)`,
and registered by one line in `stages/__init__.py`. The declaration says everything the
pipeline needs: the artifacts it reads and writes (from the registry in `artifacts.py`), the
config keys its outputs depend on (declared next to the code that reads them), the function
it runs, and when it applies. The doit tasks, `status`, `plan`, `dag`, `verify` and the CLI's
stage names all come from these declarations (`pipeline/tasks.py`).

The function a stage runs gets a `StageContext`: the configuration as a `ConfigView` that
allows only the declared keys, the run's options, where the artifacts are, and how to report
(`say`, `progress`, `ask`, `secret`). A stage never prints, prompts or exits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from imessage_finetune.artifacts import Artifact
from imessage_finetune.config import Config, ConfigView, RunOptions

Progress = Callable[[int, int], None]
"""`progress(done, total)`: how far a long step has got."""


class Console(Protocol):
    """Where a stage's words go (the pipeline's console: stderr, quiet or verbose)."""

    def say(self, text: str) -> None:
        """One line for the person running the pipeline."""
        ...

    def progress(self, label: str) -> AbstractContextManager[Progress | None]:
        """A progress callback (a bar on a terminal), or None where none is drawn."""
        ...

    def ask(self, question: str) -> bool | None:
        """A yes/no answer from the person running the pipeline; None when nobody can be
        asked (no terminal)."""
        ...

    def secret(self, question: str) -> str | None:
        """A secret typed without echo (a backup's password); None when nobody can be asked."""
        ...


@dataclass(frozen=True)
class StageContext:
    """What a running stage is given: its view of the configuration, the run's options,
    where the artifacts are, and how to report."""

    name: str
    config: ConfigView
    options: RunOptions
    console: Console

    @property
    def artifacts_dir(self) -> Path:
        """The artifacts folder."""
        return self.config.artifacts_dir

    def path(self, artifact: Artifact) -> Path:
        """Where an artifact lives in this project."""
        return artifact.path(self.artifacts_dir)

    def say(self, text: str) -> None:
        """A line about this stage ("sessions: ...")."""
        self.console.say(f"{self.name}: {text}")

    def detail(self, text: str) -> None:
        """A continuation line, indented under the stage's last line."""
        self.console.say(f"  {text}")

    def progress(self) -> AbstractContextManager[Progress | None]:
        """A progress callback for this stage, or None where no bar is drawn."""
        return self.console.progress(self.name)

    def ask(self, question: str) -> bool | None:
        """A yes/no answer (None when there is no terminal to ask on)."""
        return self.console.ask(question)

    def secret(self, question: str) -> str | None:
        """A secret typed without echo (None when there is no terminal to ask on)."""
        return self.console.secret(question)


Keys = Sequence[str] | Callable[[Config], Sequence[str]]
"""Config keys, spelled `section.key`: a list, or a function of the whole configuration
(for a stage whose keys depend on a choice, such as the backend's training keys)."""
Artifacts = Sequence[Artifact] | Callable[[ConfigView], Sequence[Artifact]]
"""Artifacts from the registry, or a function of the stage's view of the configuration."""


def always(config: Config) -> bool:
    """The default `applies`: the stage is part of every pipeline."""
    return True


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once (see the module's docstring)."""

    name: str
    """The stage's name: `doit NAME`, `imessage-finetune run NAME`."""
    doc: str
    """One line: what it does (shown by `doit list`)."""
    run: Callable[[StageContext], None]
    """The function it runs (in the stage's module, whose code enters its fingerprint)."""
    reads: Artifacts = ()
    """Artifacts it reads: a change of their bytes rebuilds it."""
    writes: Artifacts = ()
    """Artifacts it writes (published atomically; a hand edit rebuilds it)."""
    keys: Keys = ()
    """Config keys its outputs depend on: a change of one rebuilds it."""
    side_keys: Keys = ()
    """Config keys it reads that do not change its outputs (how often it checkpoints, how
    long it waits): reading them is allowed, changing them rebuilds nothing."""
    params: Callable[[ConfigView], dict[str, Any]] | None = None
    """What else its outputs depend on (resolved paths, library versions), for its
    fingerprint."""
    watched: Callable[[ConfigView], Sequence[Path]] | None = None
    """Files outside the artifacts folder it reads (chat.db and its WAL, a base model
    folder): compared by content, recorded before the stage reads them."""
    code: Callable[[ConfigView], Sequence[str]] | None = None
    """Modules (by name) whose code its outputs also depend on, besides its own module and
    what that imports (the configured backend's module, loaded by name)."""
    after: tuple[str, ...] = ()
    """Stages that must run first although no artifact links them (when they apply)."""
    applies: Callable[[Config], bool] = always
    """Whether the configured pipeline has this stage (the demo only for the demo source,
    upload only for a backend that sends data)."""
    not_applicable: str = ""
    """What to tell someone who asks for the stage where it does not apply."""
    check: Callable[[StageContext], None] | None = None
    """Runs before anything is written: raises a FinetuneError (one line) when the inputs
    outside the artifacts folder cannot be read."""
    keep_on_clean: bool = False
    """True for receipts of remote work: `doit clean` leaves them (`forget` removes them)."""

    def key_list(self, config: Config) -> list[str]:
        """The keys its outputs depend on, for this configuration."""
        return list(self.keys(config) if callable(self.keys) else self.keys)

    def side_key_list(self, config: Config) -> list[str]:
        """The keys it may read without depending on them, for this configuration."""
        return list(self.side_keys(config) if callable(self.side_keys) else self.side_keys)

    def view(self, config: Config) -> ConfigView:
        """The configuration as this stage may read it."""
        return ConfigView(config, [*self.key_list(config), *self.side_key_list(config)], f"stage {self.name}")

    def code_modules(self, view: ConfigView) -> list[str]:
        """The other modules its code fingerprint covers, for this configuration."""
        return list(self.code(view)) if self.code is not None else []

    def inputs(self, view: ConfigView) -> list[Artifact]:
        """The artifacts it reads, for this configuration."""
        return list(self.reads(view) if callable(self.reads) else self.reads)

    def outputs(self, view: ConfigView) -> list[Artifact]:
        """The artifacts it writes, for this configuration."""
        return list(self.writes(view) if callable(self.writes) else self.writes)


def counts(items: dict[str, int]) -> str:
    """Counts as words for a line, sorted by name (`audio 1, tapback 12`), or `none`."""
    return ", ".join(f"{k} {v}" for k, v in sorted(items.items())) or "none"
