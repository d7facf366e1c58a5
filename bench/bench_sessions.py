"""Benchmark: the `sessions` stage against LangChain's `IMessageChatLoader` on one chat.db.

The requirement (notes/performance.md): on a heavy user's database (300,000 messages) the
sessions stage, snapshot included, runs in less time than
`list(IMessageChatLoader(path).lazy_load())` at less than half its peak memory, both
reported as ratios measured in the same run.

The database is generated deterministically in Apple's real schema and cached under
`--workdir`. Each contender runs in a fresh interpreter; its wall time is measured around
the child and its peak RSS read from `os.wait4`, so neither pays for the other's memory.
Repetitions are interleaved and medians reported. No message text is ever printed.

On Linux a child started with vfork (as subprocess does) inherits its parent's peak RSS
at exec, so `ru_maxrss` can never be below this process's own peak. This process therefore
stays small: it imports only the standard library and builds the database in a separate
process. The floor is printed with the results.

    /work/venv/bin/python bench/bench_sessions.py                    # 300,000 messages
    /work/venv/bin/python bench/bench_sessions.py --messages 20000   # quick check
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import multiprocessing
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

# Bump whenever the generator changes, so cached databases are rebuilt.
DATASET_VERSION = 1
SEED = 20_240_607
DEFAULT_MESSAGES = 300_000
CHATS = 200
GROUPS = 42
HANDLES = 320
START_UNIX = 1_546_300_800  # 2019-01-01T00:00:00Z
SPAN_SECONDS = 6 * 365 * 86_400
BATCH = 10_000

# Shares of the message kinds; the rest are ordinary text messages.
TAPBACK_SHARE = 0.08
ATTACHMENT_SHARE = 0.06
EMPTY_SHARE = 0.02
# Ordinary messages whose `text` is NULL (body only in attributedBody), so that about a
# third of all rows are like that, as on Ventura and later.
BODY_ONLY_SHARE = 0.40
FROM_ME_SHARE = 0.45
TEXT_MIN, TEXT_MAX = 5, 200

TAPBACK_VERBS = ("Loved", "Liked", "Disliked", "Laughed at", "Emphasized", "Questioned")
TRANSFER_KEY = "__kIMFileTransferGUIDAttributeName"
OWNER_ADDRESS = "+15550000000"
WORDS = (
    "the be to of and a in that have I it for not on with he as you do at this but his by "
    "from they we say her she or an will my one all would there their what so up out if "
    "about who get which go me when make can like time no just him know take people into "
    "year your good some could them see other than then now look only come its over think "
    "also back after use two how our work first well way even new want because any these "
    "give day most us tonight dinner later tomorrow okay sure thanks lol haha yes yeah "
    "maybe running late coffee meeting weekend movie train station café naïve déjà vu "
    "👍 😂 ❤️ 🎉 über straße"
).split()

# Each contender is a program for a fresh interpreter: imports, then the work. The
# baselines run the imports alone. Arguments: the database, then an empty output folder.
REFERENCE_IMPORTS = "from langchain_community.chat_loaders.imessage import IMessageChatLoader\n"
REFERENCE_WORK = """
import json, sys
sessions = list(IMessageChatLoader(sys.argv[1]).lazy_load())
print(json.dumps({"messages": sum(len(s["messages"]) for s in sessions)}))
"""
OURS_IMPORTS = """
from imessage_finetune.sources.contacts import ContactBook
from imessage_finetune.sources.chatdb.reader import ReaderOptions
from imessage_finetune.stages.sessions import write_sessions
from imessage_finetune.stages.snapshot import take_snapshot, write_contacts
"""
OURS_WORK = """
import json, sys
from pathlib import Path
source, out = Path(sys.argv[1]), Path(sys.argv[2])
take_snapshot(source, out / "chat.db")
write_contacts([], out / "contacts.json")
summary = write_sessions(
    out / "chat.db", ContactBook.from_contacts([]), out / "sessions.json", ReaderOptions()
)
print(json.dumps({"messages": summary.messages_kept}))
"""
IMPORTS_ONLY = 'print(\'{"messages": 0}\')\n'
CONTENDERS: dict[str, str] = {
    "reference": REFERENCE_IMPORTS + REFERENCE_WORK,
    "ours": OURS_IMPORTS + OURS_WORK,
    "reference imports": REFERENCE_IMPORTS + IMPORTS_ONLY,
    "ours imports": OURS_IMPORTS + IMPORTS_ONLY,
}


class ContenderFailed(RuntimeError):
    """A contender's process exited with an error or printed no result."""


@dataclass
class _ChatPlan:
    """A generated chat: its participants' handle ROWIDs and its latest tapback targets."""

    rowid: int
    handles: list[int]
    is_group: bool
    service: str
    recent: list[str] = field(default_factory=list)


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()


def _words(rng: random.Random) -> str:
    """Random words, 5-200 characters, most messages short as in real chats."""
    target = TEXT_MIN + int((TEXT_MAX - TEXT_MIN) * rng.random() ** 2.5)
    words: list[str] = []
    length = -1
    while length < target:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:TEXT_MAX].rstrip()


def _insert_handles(conn: sqlite3.Connection, rng: random.Random) -> list[tuple[str, str]]:
    """Insert the handles (80 % phones, 20 % emails; some SMS); return (address, service)."""
    handles: list[tuple[str, str]] = []
    seen: set[str] = set()
    while len(handles) < HANDLES:
        if len(handles) % 5 == 4:
            address = f"{rng.choice(WORDS[:40]).lower()}.{len(handles)}@example.com"
            service = "iMessage"
        else:
            address = f"+1555{rng.randrange(10**7):07d}"
            service = "SMS" if rng.random() < 0.1 else "iMessage"
        if address in seen:
            continue
        seen.add(address)
        handles.append((address, service))
    conn.executemany(
        "INSERT INTO handle (ROWID, id, country, service, uncanonicalized_id) "
        "VALUES (?, ?, 'us', ?, ?)",
        [(i + 1, address, service, address) for i, (address, service) in enumerate(handles)],
    )
    return handles


def _insert_chats(
    conn: sqlite3.Connection, rng: random.Random, handles: list[tuple[str, str]]
) -> list[_ChatPlan]:
    """Insert the one-to-one chats (one per handle) and the groups with their participants."""
    chats: list[_ChatPlan] = []
    rows = []
    for index in range(CHATS):
        rowid = index + 1
        if index < CHATS - GROUPS:
            address, service = handles[index]
            prefix = "any" if rng.random() < 0.2 else service
            rows.append((rowid, f"{prefix};-;{address}", 45, address, service, None, "", None))
            chats.append(_ChatPlan(rowid, [index + 1], False, service))
        else:
            identifier = f"chat{rng.randrange(10**17, 10**18)}"
            name = " ".join(rng.choice(WORDS) for _ in range(2)) if rng.random() < 0.6 else ""
            members = sorted(rng.sample(range(1, HANDLES + 1), rng.randint(2, 8)))
            rows.append(
                (rowid, f"iMessage;+;{identifier}", 43, identifier, "iMessage", identifier,
                 name, _guid(rng))
            )
            chats.append(_ChatPlan(rowid, members, True, "iMessage"))
    conn.executemany(
        "INSERT INTO chat (ROWID, guid, style, chat_identifier, service_name, room_name, "
        "display_name, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO chat_handle_join (chat_id, handle_id) VALUES (?, ?)",
        [(chat.rowid, handle) for chat in chats for handle in chat.handles],
    )
    return chats


MESSAGE_INSERT = (
    "INSERT INTO message (ROWID, guid, text, attributedBody, handle_id, service, account, "
    "account_guid, date, date_read, date_delivered, is_delivered, is_finished, is_from_me, "
    "is_read, is_sent, associated_message_guid, associated_message_type, "
    "cache_has_attachments, destination_caller_id, part_count, version) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, 1, 10)"
)


def _insert_messages(
    conn: sqlite3.Connection, rng: random.Random, chats: list[_ChatPlan], count: int
) -> Counter[str]:
    """Insert `count` messages in date order, in batches; return how many of each kind."""
    # Imported here, in the build process only, to keep the measuring process small.
    from imessage_finetune.sources.chatdb.dates import APPLE_EPOCH_UNIX, unix_to_apple_ns
    from imessage_finetune.fixtures.typedstream import encode
    from imessage_finetune.sources.chatdb.typedstream import PART_KEY

    kinds: Counter[str] = Counter()
    # Heavy-tailed chat sizes, as in real histories.
    cumulative = list(accumulate(rng.lognormvariate(0, 1.2) for _ in chats))
    account_guid = _guid(rng)
    mean_gap = SPAN_SECONDS / count
    clock = float(START_UNIX)
    messages: list[tuple[object, ...]] = []
    joins: list[tuple[int, int, int]] = []
    attachments: list[tuple[object, ...]] = []
    for rowid in range(1, count + 1):
        chat = rng.choices(chats, cum_weights=cumulative)[0]
        clock += rng.expovariate(1 / mean_gap)
        date = unix_to_apple_ns(clock)
        from_me = rng.random() < FROM_ME_SHARE
        if from_me:
            # The owner's rows carry 0 in groups and often in one-to-one chats too.
            handle_id = 0 if chat.is_group or rng.random() < 0.6 else chat.handles[0]
        else:
            handle_id = rng.choice(chat.handles)
        guid = _guid(rng)
        roll = rng.random()
        association_guid, association, has_attachment = None, 0, 0
        if roll < TAPBACK_SHARE and chat.recent:
            kind = "tapback"
            association = 2000 + rng.randrange(len(TAPBACK_VERBS))
            association_guid = f"p:0/{rng.choice(chat.recent)}"
            text: str | None = f"{TAPBACK_VERBS[association - 2000]} “{_words(rng)}”"
            body: bytes | None = encode(text)
        elif roll < TAPBACK_SHARE + ATTACHMENT_SHARE:
            kind, text, has_attachment = "attachment_only", "\ufffc", 1
            transfer = f"at_0_{guid}"
            body = encode(text, [({PART_KEY: 0, TRANSFER_KEY: transfer}, 1)])
            attachments.append((transfer, int(clock) - APPLE_EPOCH_UNIX, rowid))
        elif roll < TAPBACK_SHARE + ATTACHMENT_SHARE + EMPTY_SHARE:
            kind, text, body = "empty", None, None
        else:
            # Since Big Sur Apple writes attributedBody on ordinary rows as well as `text`.
            text = _words(rng)
            body = encode(text)
            if rng.random() < BODY_ONLY_SHARE:
                kind, text = "body_only", None
            else:
                kind = "text"
            chat.recent = [*chat.recent[-4:], guid]
        kinds[kind] += 1
        read = date + rng.randrange(1, 3_600) * 10**9
        messages.append(
            (rowid, guid, text, body, handle_id, chat.service, f"E:{OWNER_ADDRESS}",
             account_guid, date, read, date + 10**9, 1, int(from_me), int(not from_me),
             int(from_me), association_guid, association, has_attachment, OWNER_ADDRESS)
        )
        joins.append((chat.rowid, rowid, date))
        if len(messages) == BATCH or rowid == count:
            conn.executemany(MESSAGE_INSERT, messages)
            conn.executemany(
                "INSERT INTO chat_message_join (chat_id, message_id, message_date) "
                "VALUES (?, ?, ?)",
                joins,
            )
            _insert_attachments(conn, attachments)
            messages, joins, attachments = [], [], []
    return kinds


def _insert_attachments(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """Insert attachment rows (created_date in seconds) and link them to their messages."""
    for transfer, created, message_id in rows:
        cursor = conn.execute(
            "INSERT INTO attachment (guid, original_guid, created_date, start_date, filename, uti, "
            "mime_type, transfer_state, transfer_name, total_bytes) VALUES (?, ?, ?, ?, ?, "
            "'public.heic', 'image/heic', 5, ?, 1048576)",
            (transfer, transfer, created, created,
             f"~/Library/Messages/Attachments/{transfer}/IMG.HEIC", "IMG.HEIC"),
        )
        conn.execute(
            "INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?, ?)",
            (message_id, cursor.lastrowid),
        )


def build_database(path: Path, messages: int, seed: int = SEED) -> Counter[str]:
    """Generate a chat.db of `messages` rows at `path` (replaced atomically); return kinds."""
    from imessage_finetune.fixtures.apple_schema import create_schema

    rng = random.Random(seed)
    temp = path.with_name(path.name + ".building")
    temp.unlink(missing_ok=True)
    conn = sqlite3.connect(temp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        create_schema(conn, "15")
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO _SqliteDatabaseProperties (key, value) VALUES ('_ClientVersion', '18001')"
        )
        handles = _insert_handles(conn, rng)
        chats = _insert_chats(conn, rng, handles)
        kinds = _insert_messages(conn, rng, chats, messages)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()
    os.replace(temp, path)
    return kinds


def cached_database(workdir: Path, messages: int, *, rebuild: bool = False) -> Path:
    """The generated database for this size and generator version, built when missing."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"chat-v{DATASET_VERSION}-{messages}.db"
    if rebuild or not path.exists():
        print(f"building {path} ({messages:,} messages)...", flush=True)
        start = time.perf_counter()
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            kinds = pool.submit(build_database, path, messages).result()
        summary = ", ".join(f"{kind} {n:,}" for kind, n in sorted(kinds.items()))
        print(f"built in {time.perf_counter() - start:.1f} s: {summary}", flush=True)
    return path


@dataclass(frozen=True)
class Sample:
    """One run of one contender."""

    wall_s: float
    peak_rss_mb: float
    messages: int


def _rss_mb(ru_maxrss: int) -> float:
    # Linux reports kilobytes, macOS bytes.
    return ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run_child(
    name: str, argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float, bytes]:
    """Run `argv` as a child process; its wall time, peak RSS (MB) and standard output.

    Raises ContenderFailed, with the end of its standard error, when it exits non-zero.
    """
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, cwd=cwd, env=env)
        assert child.stdout is not None
        output = child.stdout.read()
        # wait4 rather than wait(): it also returns this child's own resource usage.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.stdout.close()
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace").strip().splitlines()[-5:]
            raise ContenderFailed(f"{name} exited with {child.returncode}: " + " | ".join(tail))
    return wall, _rss_mb(usage.ru_maxrss), output


def run_contender(name: str, database: Path, out: Path) -> Sample:
    """Run one contender in a fresh interpreter; measure its wall time and peak RSS."""
    out.mkdir(parents=True)
    wall, rss, output = run_child(
        name, [sys.executable, "-c", CONTENDERS[name], str(database), str(out)], out
    )
    try:
        messages = int(json.loads(output)["messages"])
    except (ValueError, KeyError, TypeError):
        raise ContenderFailed(f"{name} printed no message count") from None
    return Sample(wall_s=wall, peak_rss_mb=rss, messages=messages)


def warm_page_cache(path: Path) -> None:
    """Read the database once so that no contender pays for a cold disk."""
    buffer = bytearray(1 << 20)  # small and reused: this process's peak is the RSS floor
    with open(path, "rb") as handle:
        while handle.readinto(buffer):
            pass


def rss_floor_mb() -> float:
    """This process's peak RSS: the least `ru_maxrss` a child can report (see above)."""
    return _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure(database: Path, workdir: Path, repetitions: int) -> dict[str, list[Sample]]:
    """Run every contender `repetitions` times, interleaved, rotating the order each round."""
    samples: dict[str, list[Sample]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    runs = workdir / "runs"
    for round_ in range(repetitions):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            out = runs / f"{name.replace(' ', '-')}-{round_}"
            shutil.rmtree(out, ignore_errors=True)
            try:
                sample = run_contender(name, database, out)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            print(
                f"  round {round_ + 1}/{repetitions} {name:<18} {sample.wall_s:7.2f} s "
                f"{sample.peak_rss_mb:8.1f} MB",
                flush=True,
            )
            samples[name].append(sample)
    for name, runs_of in samples.items():
        if len({s.messages for s in runs_of}) != 1:
            raise ContenderFailed(f"{name} returned different message counts across runs")
    return samples


def timings(runs: Sequence[Any]) -> dict[str, Any]:
    """Medians and raw figures of one contender's runs (anything with wall_s, peak_rss_mb)."""
    return {
        "wall_median_s": round(statistics.median(s.wall_s for s in runs), 3),
        "peak_rss_median_mb": round(statistics.median(s.peak_rss_mb for s in runs), 1),
        "wall_s": [round(s.wall_s, 3) for s in runs],
        "peak_rss_mb": [round(s.peak_rss_mb, 1) for s in runs],
    }


def run_document(args: argparse.Namespace, database: Path, **figures: Any) -> dict[str, Any]:
    """The JSON record of a benchmark run: when, where, on what, and `figures`."""
    return {
        "date": dt.date.today().isoformat(),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "database": {"messages": args.messages, "bytes": database.stat().st_size,
                     "dataset_version": DATASET_VERSION},
        "repetitions": args.repetitions,
        **figures,
    }


def summarise(samples: dict[str, list[Sample]]) -> dict[str, dict[str, object]]:
    """Medians (and the raw runs) per contender."""
    return {
        name: {**timings(runs), "messages_out": runs[0].messages}
        for name, runs in samples.items()
    }


def ratios(results: dict[str, dict[str, object]]) -> dict[str, float]:
    """ours / reference for time and peak memory, plus time net of each side's imports."""

    def value(name: str, key: str) -> float:
        return float(results[name][key])  # type: ignore[arg-type]

    net_ours = value("ours", "wall_median_s") - value("ours imports", "wall_median_s")
    net_reference = value("reference", "wall_median_s") - value(
        "reference imports", "wall_median_s"
    )
    return {
        "time": round(value("ours", "wall_median_s") / value("reference", "wall_median_s"), 3),
        "peak_memory": round(
            value("ours", "peak_rss_median_mb") / value("reference", "peak_rss_median_mb"), 3
        ),
        "time_net_of_imports": round(net_ours / net_reference, 3),
    }


def print_report(results: dict[str, dict[str, object]], ratio: dict[str, float]) -> None:
    """The table of medians and the ratios, with the goals they are held to."""
    print(f"\n{'contender':<18} {'wall median':>12} {'peak RSS median':>16} {'messages out':>13}")
    for name, row in results.items():
        print(
            f"{name:<18} {row['wall_median_s']:>10.2f} s {row['peak_rss_median_mb']:>13.1f} MB "
            f"{row['messages_out']:>13,}"
        )
    time_goal = "met" if ratio["time"] < 1 else "NOT met"
    memory_goal = "met" if ratio["peak_memory"] < 0.5 else "NOT met"
    print(
        f"\nours/reference: time {ratio['time']:.3f} (goal < 1: {time_goal}), "
        f"peak memory {ratio['peak_memory']:.3f} (goal < 0.5: {memory_goal}); "
        f"time net of imports {ratio['time_net_of_imports']:.3f}"
    )


def parse_args(
    argv: Sequence[str] | None, description: str = __doc__, *, keep: bool = False
) -> argparse.Namespace:
    """Command-line options (shared with bench_dataset.py; `keep` adds bench_pipeline's --keep)."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=DEFAULT_MESSAGES,
        help=f"messages in the generated database (default {DEFAULT_MESSAGES:,})",
    )
    parser.add_argument(
        "--workdir", type=Path,
        default=Path(tempfile.gettempdir()) / "imessage-finetune-bench",
        help="where the generated database is cached and runs write (default: under the temp dir)",
    )
    parser.add_argument("--repetitions", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--rebuild", action="store_true", help="regenerate the cached database")
    if keep:
        parser.add_argument(
            "--keep", type=Path, help="move the first round's outputs into this folder"
        )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repetitions < 1:
        parser.error("--messages and --repetitions must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Build or reuse the database, run the contenders, report; 1 if a contender failed."""
    args = parse_args(argv)
    workdir = args.workdir.resolve()
    database = cached_database(workdir, args.messages, rebuild=args.rebuild)
    size_mb = database.stat().st_size / 1e6
    print(f"database: {database} ({size_mb:.0f} MB, {args.messages:,} messages)")
    warm_page_cache(database)
    try:
        samples = measure(database, workdir, args.repetitions)
    except ContenderFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results = summarise(samples)
    ratio = ratios(results)
    floor = round(rss_floor_mb(), 1)
    print_report(results, ratio)
    print(f"peak RSS floor (this process's own peak, inherited by each child): {floor:.1f} MB")
    if args.json:
        document = run_document(
            args, database, peak_rss_floor_mb=floor, results=results, ratios=ratio
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
