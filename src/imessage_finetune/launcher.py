"""The `imessage-finetune` command: the CLI, imported under a Ctrl-C guard.

Importing the CLI (LangChain, jsonschema, the stages) takes a second, several on a busy
machine; Ctrl-C then must end as it does anywhere else in a run: one line, exit status 130,
nothing done, no traceback.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # the exit status of a process stopped by SIGINT


def main() -> None:
    """Import the CLI and run it (it exits with the command's status)."""
    try:
        from imessage_finetune.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted while starting; nothing was done\n")
        sys.exit(INTERRUPTED)
    cli_main()
