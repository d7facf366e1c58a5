"""Runs that hold and tell the truth (issue 12, items 1 to 4), each as a user runs it: in its
own process, through `imessage-finetune run` and through plain `doit`.

1. A source or Contacts database that cannot be read (no Full Disk Access) or is a folder:
   one line, exit status 1, nothing written.
2. `doit -f <project>/dodo.py` from another folder, with and without --db-file, and a
   killed run keeps the stages it finished.
3. One build per artifacts folder: a second build waits (saying for which run), gives up
   after the bounded wait with one line, takes over a killed run's lock; read-only commands
   write nothing and never fail because a build runs.
4. Ctrl-C in any stage: one line that says what was finished and what was not, exit 130.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatdb_builder import BASE_TIME, ChatDbBuilder
from imessage_finetune.fixtures.addressbook import write_addressbook
from imessage_finetune.pipeline import run_lock
from imessage_finetune.sources.contacts import Contact
from pipeline_runner import write_config

PROJECT = Path(__file__).resolve().parents[2]
# The CLI or plain doit (as its console script runs it: config files read from the current
# folder), with an optional fault: "module:function:call_number" receives SIGINT or SIGKILL.
RUNNER = """
import importlib, os, signal, sys
fault, kind, program, *argv = sys.argv[1:]
if fault:
    module_name, function_name, call_number = fault.split(":")
    module = importlib.import_module(module_name)
    real, calls = getattr(module, function_name), [0]

    def faulty(*args, **kwargs):
        calls[0] += 1
        if calls[0] == int(call_number):
            os.kill(os.getpid(), signal.SIGKILL if kind == "sigkill" else signal.SIGINT)
        return real(*args, **kwargs)

    setattr(module, function_name, faulty)
if program == "doit":
    from doit.doit_cmd import DoitMain
    sys.exit(DoitMain().run(argv))
from imessage_finetune.cli import main
sys.argv[1:] = argv
sys.exit(main())
"""
READ_ONLY = (["status"], ["plan"], ["dag"], ["verify"], ["conversations"], ["diagnose"])


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    """A command in its own process; `unprivileged`: root without the capabilities that let it
    read any file (as a Mac process without Full Disk Access)."""
    if unprivileged and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900)


def cli_argv(config: Path, *args: str, fault: str = "", kind: str = "sigint") -> list[str]:
    return [sys.executable, "-c", RUNNER, fault, kind, "cli", "--config", str(config), *args]


def cli(config: Path, *args: str, fault: str = "", **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`imessage-finetune --config CONFIG ARGS...`, from the config's folder."""
    return run(cli_argv(config, *args, fault=fault), cwd=config.parent, **kwargs)  # type: ignore[arg-type]


def doit(config: Path, *args: str, cwd: Path, fault: str = "", kind: str = "sigint", **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`doit -f <project>/dodo.py ARGS...` from `cwd`, the config named by the environment."""
    argv = [sys.executable, "-c", RUNNER, fault, kind, "doit", "-f", str(PROJECT / "dodo.py"), *args]
    env = {"IMESSAGE_FINETUNE_CONFIG": str(config), **kwargs.pop("env", {})}  # type: ignore[dict-item]
    return run(argv, cwd=cwd, env=env, **kwargs)  # type: ignore[arg-type]


def small_source(folder: Path) -> Path:
    """A real chat.db in Apple's schema with a few conversations."""
    folder.mkdir(parents=True, exist_ok=True)
    db = ChatDbBuilder(folder / "chat.db")
    chat = db.chat("+15555550101", [db.handle("+15555550101")])
    for day in range(12):
        db.message(chat, f"day {day}: how are you?", handle=1, at=BASE_TIME + day * 86400)
        db.message(chat, f"fine on day {day}", from_me=True, at=BASE_TIME + day * 86400 + 60)
    db.close()
    return db.path


def other_build(folder: Path) -> run_lock.RunLock:
    """This test process holding the folder's lock, as another build would (umask kept)."""
    umask = os.umask(0o022)
    os.umask(umask)
    lock = run_lock.RunLock(folder)
    lock.acquire(0, lambda text: None)
    os.umask(umask)
    return lock


def files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# -- 1. a source that cannot be read ------------------------------------------------------------


@pytest.mark.parametrize("how", ["run", "doit"])
@pytest.mark.parametrize("problem", ["unreadable chat.db", "chat.db is a folder", "unreadable contacts", "contacts folder", "unreadable contacts found by auto"])
def test_an_unreadable_source_is_one_line_exit_1_and_nothing_written(tmp_path: Path, how: str, problem: str) -> None:
    chat_db = small_source(tmp_path / "messages")
    addressbook = tmp_path / "contacts" / "AddressBook-v22.abcddb"
    addressbook.parent.mkdir()
    write_addressbook(addressbook, [Contact(first="Alice", phones=("+15555550101",))])
    home = tmp_path / "home"
    source, contacts = str(chat_db), str(addressbook)
    if problem == "unreadable chat.db":
        chat_db.chmod(0)
    elif problem == "chat.db is a folder":
        source = str(tmp_path / "messages")
    elif problem == "unreadable contacts":
        addressbook.chmod(0)
    elif problem == "contacts folder":
        contacts = str(addressbook.parent)
    else:
        found = home / "Library" / "Application Support" / "AddressBook" / "AddressBook-v22.abcddb"
        found.parent.mkdir(parents=True)
        shutil.copy(addressbook, found)
        found.chmod(0)
        contacts = "auto"
    config = tmp_path / "finetune.toml"
    config.write_text(f'[source]\npath = "{source}"\ncontacts = "{contacts}"\n[artifacts]\ndir = "out"\n')
    env = {"HOME": str(home), "TERM_PROGRAM": "Apple_Terminal"}
    if how == "run":
        done = cli(config, "run", "dataset", env=env, unprivileged=True)
    else:
        done = doit(config, "dataset", cwd=tmp_path, env=env, unprivileged=True)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("failed:")]
    assert len(errors) == 1, done.stderr
    expected = "is a folder" if "folder" in problem else "permission denied reading"
    assert expected in errors[0] and "snapshot: " in errors[0], errors[0]
    if "permission" in expected:
        assert "grant Full Disk Access to Terminal" in errors[0]
    assert not (tmp_path / "out").exists(), files(tmp_path / "out")


@pytest.mark.parametrize("how", ["run", "doit"])
def test_an_artifacts_folder_that_cannot_be_written_is_one_line_exit_1(tmp_path: Path, how: str) -> None:
    (tmp_path / "a-file").write_text("in the way\n")
    config = tmp_path / "finetune.toml"
    config.write_text('[source]\npath = "demo"\n[artifacts]\ndir = "a-file/out"\n')
    done = cli(config, "run", "dataset") if how == "run" else doit(config, "dataset", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "done:" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"stopped: cannot write in the artifacts folder {tmp_path / 'a-file' / 'out'} (Not a directory); "
        "give [artifacts] dir a folder you can write in, or fix its permissions"
    ]


# -- 2. doit from any folder ---------------------------------------------------------------------


def test_doit_runs_from_any_folder_with_and_without_a_db_file_and_keeps_what_a_killed_run_finished(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    config = write_config(project, "demo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    first = doit(config, "dataset", cwd=elsewhere)
    assert first.returncode == 0, first.stderr
    assert last_line(first.stderr).startswith("done: 5 stage(s) rebuilt (demo, snapshot, sessions, merged, dataset)")
    assert (project / "out" / "train.jsonl").is_file() and not list(elsewhere.iterdir())
    again = doit(config, "dataset", cwd=elsewhere)
    assert again.returncode == 0 and last_line(again.stderr).startswith("done: everything is up to date")

    state = tmp_path / "runs" / "doit-state"
    state.parent.mkdir()
    killed = doit(config, "--db-file", str(state), "dataset", cwd=elsewhere, fault="imessage_finetune.stages.merged:write_merged:1", kind="sigkill")
    assert killed.returncode == -signal.SIGKILL
    saved = json.loads(state.read_text())  # saved whole after each stage, though the run was killed
    assert {"demo", "snapshot", "sessions"} <= set(saved) and "merged" not in saved
    resumed = doit(config, "--db-file", str(state), "dataset", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert "sessions: up to date" in resumed.stderr and "merged: running" in resumed.stderr
    assert last_line(doit(config, "--db-file", str(state), "dataset", cwd=elsewhere).stderr).startswith(
        "done: everything is up to date"
    )


# -- 3. one build per artifacts folder ---------------------------------------------------------------


def test_a_second_build_waits_for_the_first_says_for_whom_and_gives_up_after_the_bounded_wait(tmp_path: Path) -> None:
    config = write_config(tmp_path, "demo")
    config.write_text(config.read_text().replace('dir = "out"\n', 'dir = "out"\nlock_timeout = 1.5\n'))
    out = tmp_path / "out"
    lock = other_build(out)
    stale = out / ".sessions.json.tmp-abc123"
    stale.write_text("being written by the other build")
    try:
        before = files(out)
        for args in READ_ONLY:
            done = cli(config, *args)
            assert "Traceback" not in done.stderr and done.returncode in (0, 1), (args, done.stderr)
        assert "a build is running on" in cli(config, "status").stderr
        assert files(out) == before  # read-only: nothing written, the other build's temporary file kept

        stopped = cli(config, "run", "dataset")
        assert stopped.returncode == 1
        assert f"waiting for another build of {out} to finish: pid {os.getpid()}" in stopped.stderr
        assert last_line(stopped.stderr).startswith(f"stopped: another build of {out} is still running after")
        assert "wait for it to finish (or stop it), then run again" in stopped.stderr
        assert files(out) == before
    finally:
        lock.release()

    # The other build goes on while this one waits: it waits, then builds.
    lock = other_build(out)
    config.write_text(config.read_text().replace("lock_timeout = 1.5", "lock_timeout = 600"))
    waiting = subprocess.Popen(cli_argv(config, "run", "dataset"), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    lock.release()
    _, said = waiting.communicate(timeout=900)
    assert waiting.returncode == 0, said
    assert "the other build finished; going on" in said or "waiting" not in said
    assert not stale.exists()  # the holder of the lock cleans what a killed run left


def test_a_build_that_waited_sees_what_the_other_build_recorded(tmp_path: Path) -> None:
    """doit reads its state before the run takes the lock: the waiting build reads it again,
    and does not rebuild what the build it waited for has just finished."""
    config = write_config(tmp_path, "demo")
    assert cli(config, "run", "dataset").returncode == 0
    state = tmp_path / "out" / ".doit-state.json"
    recorded = state.read_bytes()
    state.unlink()  # as before the other build began
    lock = other_build(tmp_path / "out")
    try:
        waiting = subprocess.Popen(cli_argv(config, "run", "dataset"), cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        assert waiting.stderr is not None
        assert waiting.stderr.readline().startswith("waiting for another build of")  # its state is read by now
        state.write_bytes(recorded)  # what the other build recorded while this one waited
    finally:
        lock.release()
    said = waiting.stderr.read()
    assert waiting.wait(timeout=900) == 0, said
    assert "running" not in said and last_line(said).startswith("done: everything is up to date"), said


def test_a_killed_builds_lock_is_taken_over(tmp_path: Path) -> None:
    config = write_config(tmp_path, "demo")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from imessage_finetune.pipeline import run_lock;"
         "run_lock.RunLock(Path(sys.argv[1])).acquire(0, print); print('held', flush=True); time.sleep(600)",
         str(tmp_path / "out")],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    done = cli(config, "run", "snapshot")
    assert done.returncode == 0, done.stderr
    assert f"left by pid {holder.pid}" in done.stderr and "which is no longer running" in done.stderr
    assert "waiting" not in done.stderr


def test_two_builds_and_readers_side_by_side_end_well_with_the_bytes_of_a_build_alone(tmp_path: Path) -> None:
    (tmp_path / "alone").mkdir()
    alone = write_config(tmp_path / "alone", "demo")
    assert cli(alone, "run", "dataset").returncode == 0
    (tmp_path / "shared").mkdir()
    shared = write_config(tmp_path / "shared", "demo")
    argv = cli_argv(shared, "run", "dataset")
    first = subprocess.Popen(argv, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    second = subprocess.Popen(argv, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    readers = 0
    while first.poll() is None or second.poll() is None:
        for args in READ_ONLY:
            done = cli(shared, *args)
            assert "Traceback" not in done.stderr and done.returncode in (0, 1), (args, done.stderr)
            readers += 1
    for build in (first, second):
        _, said = build.communicate()
        assert build.returncode == 0 and "Traceback" not in said, said
    assert readers >= len(READ_ONLY)

    def artifacts(folder: Path) -> dict[str, bytes]:
        skip = {".doit-state.json", "pipeline.lock.json"}
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}

    assert artifacts(tmp_path / "shared" / "out") == artifacts(tmp_path / "alone" / "out")


def test_read_only_commands_write_nothing_in_a_project_never_built(tmp_path: Path) -> None:
    config = write_config(tmp_path, "demo")
    for args in READ_ONLY:
        done = cli(config, *args)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, (args, done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune.toml"]  # no artifacts folder, no demo built
    assert "14 conversations" in cli(config, "conversations").stderr  # the demo, built in a temporary folder


# -- 4. Ctrl-C anywhere ---------------------------------------------------------------------------------

ORDER = ("demo", "snapshot", "sessions", "merged", "dataset", "train")
# Where Ctrl-C strikes in each stage (the train stage: while the local backend imports PyTorch).
STRIKES = {
    "demo": "imessage_finetune.stages.demo:build_demo:1",
    "snapshot": "imessage_finetune.stages.snapshot:write_contacts:1",
    "sessions": "imessage_finetune.stages.sessions:validate_document:3",
    "merged": "imessage_finetune.stages.merged:validate_document:3",
    "dataset": "imessage_finetune.stages.dataset:validate_lines:1",
    "train": "imessage_finetune.backends.local:require:1",
}


def test_ctrl_c_in_each_stage_is_one_line_exit_130_and_a_true_summary(tmp_path: Path) -> None:
    """Each run is interrupted in the next stage: the one before finished, the rest did not."""
    config = write_config(tmp_path, "demo")
    for index, stage in enumerate(ORDER):
        done = doit(config, "train", cwd=tmp_path, fault=STRIKES[stage])
        assert done.returncode == 130, done.stderr
        assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr and "Aborted" not in done.stderr
        summary = last_line(done.stderr)
        rest = ORDER[index + 1 :]
        assert summary.startswith(f"interrupted: {stage} stopped before it finished (nothing of it was written); "), summary
        if index == 0:
            assert "0 stage(s) rebuilt, 0 up to date" in summary, summary
        else:
            assert f"1 stage(s) rebuilt ({ORDER[index - 1]}), {index - 1} up to date" in summary, summary
        assert (f"not run: {', '.join(rest)}" in summary) if rest else "not run" not in summary
        assert summary.endswith("s)") and "run again to go on" in summary
        assert not (tmp_path / "out" / "train.jsonl").exists() or index > ORDER.index("dataset")


def test_ctrl_c_inside_the_training_loop_is_an_interrupt_that_keeps_the_checkpoint(tmp_path: Path) -> None:
    """The loop stops after a step and saves a checkpoint: the run is interrupted (130), not
    failed, and its line says where training stopped and how to go on."""
    config = write_config(tmp_path, "demo", '[finetune.local]\nbase_model = "demo"\n')
    done = doit(config, "train", cwd=tmp_path, fault="imessage_finetune.backends.local.trainer:StepEvent:3")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    summary = last_line(done.stderr)
    assert summary.startswith("interrupted: train: training stopped at step 3 of "), summary
    assert "a checkpoint was saved" in summary and "5 stage(s) rebuilt" in summary, summary
    assert not (tmp_path / "out" / "model.json").exists()


def test_ctrl_c_through_the_cli_is_the_same_line_and_status(tmp_path: Path) -> None:
    """`imessage-finetune run`, which used to add "Aborted!" to a traceback."""
    config = write_config(tmp_path, "demo")
    done = cli(config, "run", "dataset", fault=STRIKES["sessions"])
    assert done.returncode == 130 and "Aborted" not in done.stderr and "Traceback" not in done.stderr
    summary = last_line(done.stderr)
    assert summary.startswith("interrupted: sessions stopped before it finished"), summary
    assert "2 stage(s) rebuilt (demo, snapshot), 0 up to date; not run: merged, dataset" in summary
    assert not (tmp_path / "out" / "sessions.json").exists()
    assert cli(config, "run", "dataset").returncode == 0


# Ctrl-C while the command imports the pipeline (seconds on a busy machine): SIGINT arrives
# as `module` is imported.
STARTING = """
import builtins, os, signal, sys
module, program, *argv = sys.argv[1:]
real_import = builtins.__import__

def strike(name, *args, **kwargs):
    if name == module:
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)

builtins.__import__ = strike
if program == "doit":
    from doit.doit_cmd import DoitMain
    sys.exit(DoitMain().run(argv))
sys.argv[1:] = argv
from imessage_finetune.launcher import main
main()
"""


@pytest.mark.parametrize("program", ["imessage-finetune", "doit"])
def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130(tmp_path: Path, program: str) -> None:
    config = write_config(tmp_path, "demo")
    if program == "doit":
        argv = [sys.executable, "-c", STARTING, "imessage_finetune.pipeline.tasks", "doit", "-f", str(PROJECT / "dodo.py"), "dataset"]
    else:
        argv = [sys.executable, "-c", STARTING, "imessage_finetune.cli", "cli", "--config", str(config), "run", "dataset"]
    done = run(argv, cwd=tmp_path, env={"IMESSAGE_FINETUNE_CONFIG": str(config)})
    assert done.returncode == 130, done.stderr
    assert done.stderr == "interrupted while starting; nothing was done\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune.toml"]
