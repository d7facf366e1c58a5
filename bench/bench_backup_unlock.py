"""Benchmark: what an encrypted backup's password costs, against a plain backup of the same phone.

An encrypted backup is unlocked by deriving its key from the password with Apple's settings:
10,000,000 PBKDF2-SHA256 rounds then 10,000 PBKDF2-SHA1 rounds (the keybag's DPIC and ITER).
This script writes the demo's Messages and Contacts into two backups of one phone, one plain
and one encrypted with Apple's counts, and times `imessage-finetune run snapshot` on each, each
run in a fresh interpreter and a fresh artifacts folder, repetitions interleaved; it reports
the medians and their ratio. No message text is printed.

    .venv/bin/python bench/bench_backup_unlock.py                 # 3 repetitions
    .venv/bin/python bench/bench_backup_unlock.py --repetitions 5 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imessage_finetune.fixtures.demo import build_demo
from imessage_finetune.fixtures.demo_dialogue import DEMO_CONTACTS
from imessage_finetune.fixtures.ios_backup import (
    ADDRESSBOOK,
    APPLE_DPIC,
    APPLE_ITER,
    SMS,
    Encryption,
    write_backup,
    write_ios_addressbook,
)

PASSWORD = "bench password"
CLI = [sys.executable, "-c", "from imessage_finetune.cli import main; main()"]


def build(work: Path) -> dict[str, Path]:
    """A plain and an encrypted backup (Apple's key derivation counts) of the demo's phone."""
    demo = build_demo(work / "demo")
    write_ios_addressbook(work / "AddressBook.sqlitedb", DEMO_CONTACTS)
    files = {SMS: demo.chat_db.read_bytes(), ADDRESSBOOK: (work / "AddressBook.sqlitedb").read_bytes()}
    return {
        "plain": write_backup(work / "plain", files),
        "encrypted": write_backup(
            work / "encrypted", files, encryption=Encryption(PASSWORD, dpic=APPLE_DPIC, iterations=APPLE_ITER)
        ),
    }


def snapshot_seconds(work: Path, backup: Path) -> float:
    """Wall time of `imessage-finetune run snapshot` on `backup`, from a fresh artifacts folder."""
    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    (project / "finetune.toml").write_text(
        f'[source]\npath = "{backup.as_posix()}"\n[artifacts]\ndir = "out"\n', encoding="utf-8"
    )
    env = {**os.environ, "IMESSAGE_FINETUNE_BACKUP_PASSWORD": PASSWORD}
    started = time.perf_counter()
    done = subprocess.run([*CLI, "-q", "run", "snapshot"], cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run snapshot failed on {backup.name}: {done.stderr.strip()}")
    return seconds


def main() -> int:
    """Run the benchmark and print (and optionally save) the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imessage-finetune-bench-backup-") as scratch:
        work = Path(scratch)
        backups = build(work)
        times: dict[str, list[float]] = {name: [] for name in backups}
        for _ in range(args.repetitions):
            for name, backup in backups.items():
                times[name].append(snapshot_seconds(work, backup))
    medians = {name: statistics.median(values) for name, values in times.items()}
    results = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "repetitions": args.repetitions,
        "seconds": times,
        "median_seconds": medians,
        "encrypted_over_plain": medians["encrypted"] / medians["plain"],
        "unlock_seconds": medians["encrypted"] - medians["plain"],
    }
    print(results["machine"])
    for name, median in medians.items():
        print(f"run snapshot, {name:9} backup: median {median:.2f} s of {args.repetitions}")
    print(
        f"encrypted / plain: {results['encrypted_over_plain']:.2f}x; "
        f"the password costs {results['unlock_seconds']:.2f} s (Apple's {APPLE_DPIC:,} + {APPLE_ITER:,} rounds)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
