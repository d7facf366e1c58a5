"""The run lock on its own, in one process and without signals, so it runs on Windows too
(where the lock is msvcrt's and a holder's liveness is asked of the system, not probed with
os.kill, which terminates the process there). tests/pipeline/test_runs.py covers the lock as
users meet it, through whole builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imessage_finetune.pipeline import run_lock


def note(folder: Path, pid: int) -> None:
    """A lock file as a run with `pid` leaves it (no lock held on it now)."""
    folder.mkdir(parents=True, exist_ok=True)
    run_lock.lock_path(folder).write_text(json.dumps({"pid": pid, "command": "doit dataset", "started": time.time()}))


def test_a_second_lock_of_the_same_folder_is_refused_while_the_first_is_held(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    first = run_lock.RunLock(folder)
    first.acquire(0, print)
    said: list[str] = []
    with pytest.raises(run_lock.BuildLocked) as refused:
        run_lock.RunLock(folder).acquire(0, said.append)
    assert f"another build of {folder} is still running" in str(refused.value)
    assert f"pid {os.getpid()}" in str(refused.value)  # who holds it, from its note
    assert run_lock.running_build(folder) is not None
    first.release()

    second = run_lock.RunLock(folder)
    second.acquire(0, said.append)
    assert second.held and said == []
    second.release()


def test_a_running_holder_is_not_taken_over_nor_stopped(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        note(folder, other.pid)
        said: list[str] = []
        lock = run_lock.RunLock(folder)
        lock.acquire(0, said.append)
        lock.release()
        assert not any("taking over" in line for line in said), said
        # Asking whether it runs must not end it (os.kill(pid, 0) would, on Windows).
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_finished_holders_lock_is_taken_over_and_said(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    note(folder, pid)
    said: list[str] = []
    lock = run_lock.RunLock(folder)
    lock.acquire(0, said.append)
    lock.release()
    assert any(f"left by pid {pid}" in line and "no longer running" in line for line in said), said


def test_releasing_leaves_no_trace_in_a_folder_the_lock_made(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    lock = run_lock.RunLock(folder)
    lock.acquire(0, print)
    assert run_lock.lock_path(folder).exists()
    lock.release()
    assert not folder.exists()
