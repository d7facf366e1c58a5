"""One build at a time per artifacts folder.

A build holds `artifacts/.build.lock` for as long as it runs: an exclusive `flock` on the
file (on Windows a lock on one byte of it), which holds the pid and command of the run. The system releases the lock when the
process ends, however it ends, so a lock left by a killed run is simply taken over (and
said so). A second build waits, saying on stderr which run it waits for, at most
`[artifacts] lock_timeout` seconds, then stops with one line that says what to do.

Only the run holding the lock prepares the folder (umask 077, the folder private) and
removes the temporary files a killed run left: another build's temporary files are never
touched. Read-only commands (`status`, `plan`, `dag`, `verify`...) never take the lock and
write nothing; `running_build` tells them, without writing, whether a build is running.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from imessage_finetune.artifacts import ensure_private_dir
from imessage_finetune.atomic import clean_stale_temporaries
from imessage_finetune.errors import FinetuneError

if sys.platform == "win32":
    import msvcrt
else:
    import fcntl

LOCK_FILE = ".build.lock"
SAY_AFTER = 1.0  # seconds of waiting before saying so (a read-only check holds it for microseconds)


class BuildLocked(FinetuneError):
    """Another build of the same artifacts folder kept running past the bounded wait."""


class ArtifactsUnwritable(FinetuneError):
    """The artifacts folder cannot be created or written in (permissions, a file in the way)."""


@dataclass(frozen=True)
class Holder:
    """The run that holds (or last held) the lock."""

    pid: int
    command: str
    started: float

    def describe(self) -> str:
        """`pid 123 (imessage-finetune run dataset, started 14:02:11)`."""
        started = time.strftime("%H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} ({self.command}, started {started})"


def lock_path(folder: Path) -> Path:
    """The lock file of an artifacts folder."""
    return folder / LOCK_FILE


def _command() -> str:
    """How this process was started, as a user would type it."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name in ("-c", "__main__.py"):
        name = "python"
    return " ".join([name, *sys.argv[1:]])[:200]


# Windows locks are mandatory byte ranges, not advisory whole-file locks: the lock is one byte
# far past the note, so a waiting build can still read who holds it.
_WINDOWS_LOCK_OFFSET = 1 << 20


def _try_lock(fd: int, *, shared: bool = False) -> bool:
    """Lock `fd` without waiting (exclusive, or shared where the system has it); False when
    another process holds it."""
    try:
        if sys.platform == "win32":
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError here; PermissionError from msvcrt
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_head(fd: int) -> bytes:
    """The first 4 KiB of the lock file (Windows has no pread)."""
    if sys.platform == "win32":
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 4096)
    else:
        return os.pread(fd, 4096, 0)


def _write_note(fd: int, note: bytes) -> None:
    os.ftruncate(fd, 0)
    if sys.platform == "win32":
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, note)
    else:
        os.pwrite(fd, note, 0)


def _read(fd: int) -> Holder | None:
    try:
        data = json.loads(_read_head(fd) or b"null")
        return Holder(int(data["pid"]), str(data["command"]), float(data["started"]))
    except (ValueError, TypeError, KeyError, OSError):
        return None


def _alive(pid: int) -> bool:
    if sys.platform == "win32":
        # os.kill(pid, 0) would terminate the process on Windows: ask whether it still runs.
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    else:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class RunLock:
    """The lock of one artifacts folder, held by this process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = lock_path(folder)
        self._fd: int | None = None
        self._made_folder = False

    @property
    def held(self) -> bool:
        """Whether this process holds it."""
        return self._fd is not None

    def acquire(
        self,
        timeout: float,
        say: Callable[[str], None],
        *,
        poll: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Take the lock, waiting at most `timeout` seconds for another build; then prepare
        the folder. Raises BuildLocked when the other build is still running."""
        self._made_folder = not self.folder.exists()
        os.umask(0o077)  # every file this run creates is private, doit's state file included
        started, told = clock(), False
        while True:
            fd = self._open()
            if not _try_lock(fd):
                holder = _read(fd)
                os.close(fd)
                waited = clock() - started
                other = holder.describe() if holder else "another process"
                if waited >= timeout:
                    raise BuildLocked(
                        f"another build of {self.folder} is still running after {waited:.0f} s: {other}; "
                        "wait for it to finish (or stop it), then run again ([artifacts] lock_timeout sets "
                        "how long to wait)"
                    ) from None
                if not told and waited >= SAY_AFTER:
                    say(f"waiting for another build of {self.folder} to finish: {other} (at most {timeout:g} s)")
                    told = True
                sleep(poll)
                continue
            # The file may have been removed by the holder we waited for: lock the one in place.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            break
        previous = _read(fd)
        if previous is not None and previous.pid != os.getpid() and not _alive(previous.pid):
            say(f"taking over the lock of {self.folder} left by {previous.describe()}, which is no longer running")
        note = json.dumps({"pid": os.getpid(), "command": _command(), "started": time.time()}).encode()
        _write_note(fd, note)
        self._fd = fd
        if told:
            say("the other build finished; going on")
        # Only the holder removes what a killed run left: other builds' files are safe.
        clean_stale_temporaries(self.folder)

    def _open(self) -> int:
        """The lock file, opened for writing (the folder made private first); one line that
        says what to do when the folder cannot be written in."""
        try:
            ensure_private_dir(self.folder)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ArtifactsUnwritable(
                f"cannot write in the artifacts folder {self.folder} ({exc.strerror or exc}); "
                "give [artifacts] dir a folder you can write in, or fix its permissions"
            ) from None

    def release(self) -> None:
        """Let the next build go; leave no trace in a folder this build created and left empty."""
        if self._fd is None:
            return
        if sys.platform == "win32":
            # Windows removes no file that is open: close first; a build that opened it in
            # between keeps it (the unlink then fails, harmlessly).
            _unlock(self._fd)
            os.close(self._fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
        else:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # while still locked, so no other build holds an unlinked file
            os.close(self._fd)
        self._fd = None
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty: a build that failed before writing anything


_HELD: dict[Path, RunLock] = {}


def hold(folder: Path, timeout: float, say: Callable[[str], None]) -> RunLock:
    """The lock of `folder` for this process: taken once (waiting as `acquire` does), kept
    until `release_all` or the end of the process."""
    lock = _HELD.get(folder)
    if lock is None or not lock.held:
        lock = RunLock(folder)
        lock.acquire(timeout, say)
        _HELD[folder] = lock
    return lock


def release_all() -> None:
    """Release every lock this process holds (at the end of a run)."""
    for lock in list(_HELD.values()):
        lock.release()
    _HELD.clear()


atexit.register(release_all)


@contextlib.contextmanager
def held(folder: Path, timeout: float, say: Callable[[str], None]) -> Iterator[RunLock]:
    """The lock for the duration of a block (commands that change the state, like `forget`)."""
    already = folder in _HELD and _HELD[folder].held
    lock = hold(folder, timeout, say)
    try:
        yield lock
    finally:
        if not already:
            lock.release()
            _HELD.pop(folder, None)


def running_build(folder: Path) -> Holder | None:
    """The build running on `folder`, if any: found without writing anything."""
    try:
        fd = os.open(lock_path(folder), os.O_RDONLY)
    except OSError:
        return None
    try:
        if not _try_lock(fd, shared=True):
            return _read(fd) or Holder(0, "another process", time.time())
        _unlock(fd)
        return None
    finally:
        os.close(fd)
