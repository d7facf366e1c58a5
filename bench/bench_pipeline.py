"""Benchmark: `doit dataset` (chat.db to train.jsonl) against LangChain's chain and a bare SQL scan.

The requirement (issue 13): on the 300,000-message benchmark database, `doit dataset` run as a
process (snapshot, sessions, merged and dataset stages, every artifact validated) takes at most
the time of LangChain's chain run as a process on the same file, and it must never get slower.
Both are reported against a bare SQL scan of the same rows, the floor of any reader.

Contenders, each a fresh process started from this one, on the same cached database:

- `ours`: the `doit` command on the repository's dodo.py with a finetune.toml that differs from
  the committed one only in `[source]` (the benchmark database, no Contacts) and
  `[artifacts] dir` (a fresh folder each run, so every stage really runs);
- `chain`: `IMessageChatLoader(path).lazy_load()` from langchain-community, the owner's
  messages relabelled by `is_from_me` (sender "Me"), `merge_chat_runs`,
  `map_ai_messages(sender="Me")`, `convert_messages_for_finetuning`, one `json.dumps` line per
  example: the best a user can do with the reference (notes/performance.md);
- `sql`: the reference loader's SQL alone (its chat list, then one query per chat, rows
  fetched and dropped).

Wall time is measured around each child and peak RSS read from `os.wait4`; repetitions are
interleaved (the order rotates each round) and medians reported. Each writer's train.jsonl must
be byte-identical across repetitions; its SHA-256 is printed so a change of the pipeline can be
checked to leave the bytes alone. No message text is ever printed.

This process imports only the standard library (and `bench_sessions`, which does too): a
vfork-started child inherits its parent's peak RSS (see bench_sessions.py).

    .venv/bin/python bench/bench_pipeline.py                    # 300,000 messages
    .venv/bin/python bench/bench_pipeline.py --messages 20000   # quick check
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_sessions as base
from bench_dataset import file_sha256

REPOSITORY = Path(__file__).resolve().parents[1]
OWNER_SENDER = "Me"  # the relabelled owner, as `[sessions] owner_name` names them in ours
TRAIN_FILE = "train.jsonl"

CHAIN = f"""
import json, sys
from pathlib import Path
from langchain_community.adapters.openai import convert_messages_for_finetuning
from langchain_community.chat_loaders.imessage import IMessageChatLoader
from langchain_community.chat_loaders.utils import map_ai_messages, merge_chat_runs

def relabelled(sessions):
    # LangChain's loader names a message by the chat's handle whatever its direction: the
    # owner's messages are told apart only by is_from_me.
    for session in sessions:
        for message in session["messages"]:
            if message.additional_kwargs["is_from_me"]:
                message.additional_kwargs["sender"] = {OWNER_SENDER!r}
        yield session

database, out = sys.argv[1], Path(sys.argv[2])
chats = relabelled(IMessageChatLoader(database).lazy_load())
examples = convert_messages_for_finetuning(
    map_ai_messages(merge_chat_runs(chats), sender={OWNER_SENDER!r})
)
with open(out / {TRAIN_FILE!r}, "w", encoding="utf-8") as handle:
    for messages in examples:
        handle.write(json.dumps({{"messages": messages}}) + "\\n")
"""

SQL = """
import sqlite3, sys

# The reference loader's own queries (IMessageChatLoader._get_session_query on a database with
# chat_handle_join), rows fetched and dropped: what any reader must pay.
conn = sqlite3.connect(sys.argv[1])
cursor = conn.cursor()
cursor.execute(
    "SELECT chat_id FROM message JOIN chat_message_join ON message.ROWID = "
    "chat_message_join.message_id GROUP BY chat_id ORDER BY MAX(date) DESC"
)
query = (
    "SELECT message.date, handle.id, message.text, message.is_from_me, message.attributedBody "
    "FROM message JOIN chat_message_join ON message.ROWID = chat_message_join.message_id "
    "JOIN chat_handle_join ON chat_message_join.chat_id = chat_handle_join.chat_id "
    "JOIN handle ON handle.ROWID = chat_handle_join.handle_id "
    "WHERE chat_message_join.chat_id = ? ORDER BY message.date ASC"
)
rows = 0
for (chat_id,) in cursor.fetchall():
    rows += len(cursor.execute(query, (chat_id,)).fetchall())
print(rows, file=sys.stderr)
"""

CONFIG = """[source]
path = "{database}"
contacts = "none"

[artifacts]
dir = "{artifacts}"
"""
CONTENDERS = ("ours", "chain", "sql")
WRITERS = ("ours", "chain")


@dataclass(frozen=True)
class Sample:
    """One run of one contender; `examples` and `sha256` describe its train.jsonl."""

    wall_s: float
    peak_rss_mb: float
    examples: int | None
    sha256: str | None


def command(name: str, database: Path, out: Path) -> tuple[list[str], dict[str, str], Path]:
    """The command line, environment and working folder of one contender writing into `out`.

    `doit` runs in the repository, as a user runs it: its pyproject.toml names doit's state
    backend.
    """
    if name == "ours":
        config = out / "finetune.toml"
        config.write_text(CONFIG.format(database=database, artifacts=out / "artifacts"))
        doit = Path(sys.executable).with_name("doit")
        env = {**os.environ, "IMESSAGE_FINETUNE_CONFIG": str(config)}
        return [str(doit), "dataset"], env, REPOSITORY
    program = CHAIN if name == "chain" else SQL
    return [sys.executable, "-c", program, str(database), str(out)], dict(os.environ), out


def train_file(name: str, out: Path) -> Path:
    """Where a contender writes its train.jsonl."""
    return out / "artifacts" / TRAIN_FILE if name == "ours" else out / TRAIN_FILE


def count_lines(path: Path) -> int:
    """Lines of a file, read in small pieces (this process's peak RSS stays the floor)."""
    lines = 0
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while size := handle.readinto(buffer):
            lines += view[:size].tobytes().count(b"\n")
    return lines


def measure(database: Path, workdir: Path, repetitions: int, keep: Path | None) -> dict[str, list[Sample]]:
    """Run every contender `repetitions` times, interleaved, rotating the order each round.

    With `keep`, the first round's artifacts of `ours` (and the chain's train.jsonl) are moved
    there, for comparisons with another build.
    """
    samples: dict[str, list[Sample]] = {name: [] for name in CONTENDERS}
    runs = workdir / "pipeline-runs"
    for round_ in range(repetitions):
        shift = round_ % len(CONTENDERS)
        for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
            out = runs / f"{name}-{round_}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            try:
                argv, env, cwd = command(name, database, out)
                wall, rss, _ = base.run_child(name, argv, cwd, env)
                examples = digest = None
                if name in WRITERS:
                    train = train_file(name, out)
                    examples, digest = count_lines(train), file_sha256(train)
                    if keep is not None and round_ == 0:
                        target = keep / name
                        shutil.rmtree(target, ignore_errors=True)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(train.parent, target)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            sample = Sample(wall, rss, examples, digest)
            print(
                f"  round {round_ + 1}/{repetitions} {name:<6} {wall:7.2f} s {rss:8.1f} MB",
                flush=True,
            )
            samples[name].append(sample)
    for name, runs_of in samples.items():
        if len({(s.examples, s.sha256) for s in runs_of}) != 1:
            raise base.ContenderFailed(f"{name} wrote different outputs across repetitions")
    return samples


def summarise(samples: dict[str, list[Sample]]) -> dict[str, dict[str, Any]]:
    """Medians (and the raw runs) per contender, with what it wrote."""
    return {
        name: {**base.timings(runs), "examples": runs[0].examples, "sha256": runs[0].sha256}
        for name, runs in samples.items()
    }


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """ours against the chain and against the bare SQL scan, by median; and the median of the
    ratios within each round, which a machine whose load drifts between rounds moves less."""

    def median(name: str, key: str = "wall_median_s") -> float:
        return float(results[name][key])

    def per_round(other: str) -> float:
        pairs = zip(results["ours"]["wall_s"], results[other]["wall_s"], strict=True)
        return round(statistics.median(ours / theirs for ours, theirs in pairs), 3)

    return {
        "time_vs_chain_per_round": per_round("chain"),
        "time_vs_sql_per_round": per_round("sql"),
        "time_vs_chain": round(median("ours") / median("chain"), 3),
        "time_vs_sql": round(median("ours") / median("sql"), 2),
        "chain_vs_sql": round(median("chain") / median("sql"), 2),
        "memory_vs_chain": round(median("ours", "peak_rss_median_mb") / median("chain", "peak_rss_median_mb"), 3),
    }


def machine_load() -> str:
    """The 1, 5 and 15-minute load averages: how busy the shared machine was."""
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Build or reuse the database, run the contenders, report; 1 if a contender failed."""
    args = base.parse_args(argv, __doc__, keep=True)
    workdir = args.workdir.resolve()
    database = base.cached_database(workdir, args.messages, rebuild=args.rebuild)
    size_mb = database.stat().st_size / 1e6
    print(f"database: {database} ({size_mb:.0f} MB, {args.messages:,} messages)")
    print(f"load average before: {machine_load()} ({os.cpu_count()} cores)")
    base.warm_page_cache(database)
    try:
        samples = measure(database, workdir, args.repetitions, args.keep)
    except base.ContenderFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    load_after = machine_load()
    results = summarise(samples)
    ratio = ratios(results)
    print(f"\n{'contender':<10} {'wall median':>12} {'peak RSS median':>16} {'examples':>9}")
    for name, row in results.items():
        examples = f"{row['examples']:,}" if row["examples"] is not None else "-"
        print(f"{name:<10} {row['wall_median_s']:>10.2f} s {row['peak_rss_median_mb']:>13.1f} MB {examples:>9}")
    for name in WRITERS:
        print(f"{name} train.jsonl sha256 {results[name]['sha256']}")
    goal = "met" if ratio["time_vs_chain"] <= 1 else "NOT met"
    print(
        f"\nours/chain: time {ratio['time_vs_chain']:.3f} (goal <= 1: {goal}; median of the "
        f"rounds' ratios {ratio['time_vs_chain_per_round']:.3f}), "
        f"peak memory {ratio['memory_vs_chain']:.3f}\n"
        f"ours/sql: time {ratio['time_vs_sql']:.2f} (rounds {ratio['time_vs_sql_per_round']:.2f}); "
        f"chain/sql: time {ratio['chain_vs_sql']:.2f}\n"
        f"load average after: {load_after}; peak RSS floor: {base.rss_floor_mb():.1f} MB"
    )
    if args.json:
        document = base.run_document(args, database, load_after=load_after, results=results, ratios=ratio)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
