"""`imessage-finetune serve` in its own process, as a user starts it, for the tests.

The server is started on 127.0.0.1 with `--port 0` (a free port, read back from the line it
prints once it accepts connections); what it logs is collected line by line so that tests can
wait for a line and check that nothing private or a traceback was written.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

COMMAND = "from imessage_finetune.cli import main; main()"
READY = re.compile(r" at (http://127\.0\.0\.1:\d+/v1) \(Ctrl-C stops\)")


class ServeProcess:
    """A running `serve`; `url` is its base URL (…/v1), `lines` what it wrote to stderr."""

    def __init__(self, config: Path, *args: str, wait: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", COMMAND, "--config", str(config), "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            line = self.wait_for(READY.pattern, timeout=240)
            match = READY.search(line)
            assert match, line
            self.url = match.group(1)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        """Everything written to stderr so far."""
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60) -> str:
        """The first line matching `pattern`, waiting for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; the server said:\n{self.log}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Send `sig` and wait for the process to end; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def wait(self, timeout: float = 120) -> int:
        """Wait for the process to end by itself; its exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """End it for good (a test that failed midway)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
