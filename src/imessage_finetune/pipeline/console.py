"""The pipeline's console: where stages' words go (stderr, never stdout), a progress bar on a
terminal only, and questions only where someone can answer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from imessage_finetune.config import RunOptions
from imessage_finetune.stages.stage import Progress


class Console:
    """Says lines on stderr (none when quiet), draws bars on a terminal, asks on a terminal."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options

    def say(self, text: str) -> None:
        """Chatter for the person running the pipeline: stderr, never stdout; silent when quiet."""
        if self.options.verbosity > 0:
            print(text, file=sys.stderr, flush=True)

    @contextmanager
    def progress(self, label: str) -> Iterator[Progress | None]:
        """A progress callback drawing a bar on stderr, only on a terminal and when not quiet."""
        if self.options.verbosity == 0 or not sys.stderr.isatty():
            yield None
            return
        with click.progressbar(length=1, label=label, file=sys.stderr) as bar:

            def update(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)

            yield update

    def ask(self, question: str) -> bool | None:
        """The answer to a yes/no question asked on the terminal; None without one."""
        if not sys.stdin.isatty():
            return None
        return click.confirm(question, default=False, err=True)

    def secret(self, question: str) -> str | None:
        """A secret typed on the terminal without echo; None without a terminal."""
        if not sys.stdin.isatty():
            return None
        answer: str = click.prompt(question, hide_input=True, err=True)
        return answer
