"""Benchmark: `doit dataset` after sessions against LangChain's merge → map → convert chain.

The requirement: on the 300,000-message benchmark database, `doit dataset` after sessions
(the `merged` and `dataset` stages) takes less time than LangChain's documented chain on the
same sessions (`merge_chat_runs` → `map_ai_messages` → `convert_messages_for_finetuning`,
written as JSONL), reported as a ratio measured in the same run, and no example of ours
exceeds the configured token budget (`DatasetConfig().max_tokens`).

The database is `bench_sessions.py`'s (same generator, same cache); the sessions stage runs
once, untimed, with `bench_sessions`' own program for it. Each contender then starts from that
sessions.json in a fresh interpreter; wall time is measured around the child and peak RSS read
from `os.wait4`; repetitions are interleaved and medians reported. Outputs must be
byte-identical across repetitions. The first round's outputs are then analysed in another
child (example counts, characters and tokens per example). No message text is ever printed.

This process imports only the standard library (and `bench_sessions`, which does too), for
the reason given there: a vfork-started child inherits its parent's peak RSS.

    /work/venv/bin/python bench/bench_dataset.py                    # 300,000 messages
    /work/venv/bin/python bench/bench_dataset.py --messages 20000   # quick check
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_sessions as base

# The owner's sender name in sessions.json (ReaderOptions().owner_name): the AI side for the
# reference, as `ai_sender = "me"` is for ours.
OWNER_SENDER = "Me"
TRAIN_FILE = "train.jsonl"

# Each contender is a program for a fresh interpreter: imports, then the work. Arguments:
# sessions.json, then an empty output folder; it prints {"examples": n}.
OURS_IMPORTS = """
from imessage_finetune.config import DatasetConfig, FinetuneConfig
from imessage_finetune.stages.dataset import write_dataset
from imessage_finetune.stages.merged import write_merged
from imessage_finetune.tokens import counter_for
"""
# What the `merged` and `dataset` doit actions call, with the default configuration.
OURS_WORK = """
import json, sys
from pathlib import Path
sessions, out = Path(sys.argv[1]), Path(sys.argv[2])
options, finetune = DatasetConfig(), FinetuneConfig()
counter = counter_for(finetune.model)
write_merged(sessions, out / "merged.json", options, counter)
summary = write_dataset(out / "merged.json", out, options, finetune, counter)
print(json.dumps({"examples": summary.report["examples"]["train"]}))
"""
REFERENCE_IMPORTS = """
from langchain_community.adapters.openai import convert_messages_for_finetuning
from langchain_community.chat_loaders.utils import map_ai_messages, merge_chat_runs
from imessage_finetune.langchain.loader import load_sessions_file
"""
REFERENCE_WORK = f"""
import json, sys
from pathlib import Path
sessions, out = Path(sys.argv[1]), Path(sys.argv[2])
chats = load_sessions_file(sessions)
examples = convert_messages_for_finetuning(
    map_ai_messages(merge_chat_runs(chats), sender={OWNER_SENDER!r})
)
with open(out / {TRAIN_FILE!r}, "w", encoding="utf-8") as handle:
    for messages in examples:
        handle.write(json.dumps({{"messages": messages}}) + "\\n")
print(json.dumps({{"examples": len(examples)}}))
"""
IMPORTS_ONLY = 'print(\'{"examples": 0}\')\n'
CONTENDERS: dict[str, str] = {
    "reference": REFERENCE_IMPORTS + REFERENCE_WORK,
    "ours": OURS_IMPORTS + OURS_WORK,
    "reference imports": REFERENCE_IMPORTS + IMPORTS_ONLY,
    "ours imports": OURS_IMPORTS + IMPORTS_ONLY,
}
WRITERS = ("ours", "reference")

# Untimed: the figures of each train.jsonl given as arguments, with the target model's counter.
ANALYSE = """
import json, sys
from imessage_finetune.config import DatasetConfig, FinetuneConfig
from imessage_finetune.tokens import counter_for
counter = counter_for(FinetuneConfig().model)
budget = DatasetConfig().max_tokens
figures = {"budget": budget, "encoding": counter.encoding, "exact": counter.exact, "files": []}
for path in sys.argv[1:]:
    examples = max_chars = max_tokens = over = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            messages = json.loads(line)["messages"]
            chars = sum(len(m.get("content") or "") for m in messages)
            tokens = counter.count_example(messages)
            examples += 1
            max_chars = max(max_chars, chars)
            max_tokens = max(max_tokens, tokens)
            over += tokens > budget
    figures["files"].append({
        "examples": examples, "max_chars": max_chars, "max_tokens": max_tokens,
        "over_budget": over, "bytes": __import__("os").path.getsize(path),
    })
print(json.dumps(figures))
"""


@dataclass(frozen=True)
class Sample:
    """One run of one contender."""

    wall_s: float
    peak_rss_mb: float
    examples: int
    sha256: str | None


def run_program(
    name: str, program: str, args: Sequence[str], cwd: Path
) -> tuple[float, float, Any]:
    """Run `program` in a fresh interpreter; its wall time, peak RSS (MB) and printed JSON."""
    wall, rss, output = base.run_child(name, [sys.executable, "-c", program, *args], cwd)
    try:
        return wall, rss, json.loads(output)
    except ValueError:
        raise base.ContenderFailed(f"{name} printed no result") from None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in small pieces so this process's peak RSS stays low."""
    digest = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def prepare_sessions(database: Path, workdir: Path, messages: int) -> Path:
    """Run the sessions stage once (untimed) with bench_sessions' program; the sessions.json."""
    folder = workdir / f"dataset-sessions-v{base.DATASET_VERSION}-{messages}"
    shutil.rmtree(folder, ignore_errors=True)
    print(f"sessions stage (untimed) into {folder}...", flush=True)
    sample = base.run_contender("ours", database, folder)
    (folder / "chat.db").unlink()  # the snapshot copy is not needed any more
    sessions = folder / "sessions.json"
    size_mb = sessions.stat().st_size / 1e6
    print(
        f"  {sample.messages:,} messages kept, {size_mb:.0f} MB, {sample.wall_s:.1f} s",
        flush=True,
    )
    return sessions


def measure(
    sessions: Path, workdir: Path, repetitions: int
) -> tuple[dict[str, list[Sample]], dict[str, Path]]:
    """Run every contender `repetitions` times, interleaved, rotating the order each round.

    Returns the samples and the first round's train.jsonl of each contender that writes one.
    """
    samples: dict[str, list[Sample]] = {name: [] for name in CONTENDERS}
    names = list(CONTENDERS)
    runs = workdir / "dataset-runs"
    kept_dir = workdir / "dataset-outputs"
    shutil.rmtree(kept_dir, ignore_errors=True)
    kept_dir.mkdir(parents=True)
    kept: dict[str, Path] = {}
    for round_ in range(repetitions):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            out = runs / f"{name.replace(' ', '-')}-{round_}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            try:
                wall, rss, printed = run_program(
                    name, CONTENDERS[name], [str(sessions), str(out)], out
                )
                train = out / TRAIN_FILE
                digest = file_sha256(train) if name in WRITERS else None
                if name in WRITERS and name not in kept:
                    kept[name] = train.replace(kept_dir / f"{name}-{TRAIN_FILE}")
            finally:
                shutil.rmtree(out, ignore_errors=True)
            sample = Sample(wall, rss, int(printed["examples"]), digest)
            print(
                f"  round {round_ + 1}/{repetitions} {name:<18} {sample.wall_s:7.2f} s "
                f"{sample.peak_rss_mb:8.1f} MB",
                flush=True,
            )
            samples[name].append(sample)
    for name, runs_of in samples.items():
        if len({(s.examples, s.sha256) for s in runs_of}) != 1:
            raise base.ContenderFailed(f"{name} wrote different outputs across repetitions")
    return samples, kept


def summarise(
    samples: dict[str, list[Sample]], figures: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Medians (and the raw runs) per contender, with the analysis of what it wrote."""
    results: dict[str, dict[str, Any]] = {}
    for name, runs in samples.items():
        results[name] = base.timings(runs)
        if name in figures:
            results[name]["output"] = {**figures[name], "sha256": runs[0].sha256}
    return results


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """ours / reference for time and peak memory, plus time net of each side's imports."""

    def value(name: str, key: str) -> float:
        return float(results[name][key])

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


def print_report(
    results: dict[str, dict[str, Any]], ratio: dict[str, float], tokenizer: str
) -> None:
    """The tables of medians and outputs, and the ratios against the goal."""
    print(f"\n{'contender':<18} {'wall median':>12} {'peak RSS median':>16}")
    for name, row in results.items():
        print(f"{name:<18} {row['wall_median_s']:>10.2f} s {row['peak_rss_median_mb']:>13.1f} MB")
    print(
        f"\n{'output':<10} {'examples':>9} {'max chars':>11} {'max tokens':>11} "
        f"{'over budget':>12} {'MB':>7}"
    )
    for name in WRITERS:
        out = results[name]["output"]
        print(
            f"{name:<10} {out['examples']:>9,} {out['max_chars']:>11,} {out['max_tokens']:>11,} "
            f"{out['over_budget']:>12,} {out['bytes'] / 1e6:>7.1f}"
        )
    print(f"tokens counted with {tokenizer}")
    goal = "met" if ratio["time"] < 1 else "NOT met"
    print(
        f"\nours/reference: time {ratio['time']:.3f} (goal < 1: {goal}), "
        f"peak memory {ratio['peak_memory']:.3f}; "
        f"time net of imports {ratio['time_net_of_imports']:.3f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare, run the contenders, analyse, report; 1 if a contender failed or an example
    of ours exceeds the token budget."""
    args = base.parse_args(argv, __doc__)
    workdir = args.workdir.resolve()
    database = base.cached_database(workdir, args.messages, rebuild=args.rebuild)
    size_mb = database.stat().st_size / 1e6
    print(f"database: {database} ({size_mb:.0f} MB, {args.messages:,} messages)")
    try:
        sessions = prepare_sessions(database, workdir, args.messages)
        base.warm_page_cache(sessions)
        samples, kept = measure(sessions, workdir, args.repetitions)
        _, _, analysis = run_program("analysis", ANALYSE, [str(kept[n]) for n in WRITERS], workdir)
    except base.ContenderFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figures = dict(zip(WRITERS, analysis["files"], strict=True))
    for name in WRITERS:
        if figures[name]["examples"] != samples[name][0].examples:
            print(f"error: {name} reported {samples[name][0].examples} examples but wrote "
                  f"{figures[name]['examples']}", file=sys.stderr)
            return 1
    results = summarise(samples, figures)
    ratio = ratios(results)
    floor = round(base.rss_floor_mb(), 1)
    tokenizer = f"{analysis['encoding']} ({'exact' if analysis['exact'] else 'estimate'})"
    print_report(results, ratio, tokenizer)
    print(f"peak RSS floor (this process's own peak, inherited by each child): {floor:.1f} MB")
    budget, ours = analysis["budget"], figures["ours"]
    within = ours["over_budget"] == 0
    print(
        f"token budget {budget}: ours max {ours['max_tokens']} tokens per example, "
        f"{ours['over_budget']} over ({'ok' if within else 'FAILED'})"
    )
    if args.json:
        document = base.run_document(
            args,
            database,
            sessions_bytes=sessions.stat().st_size,
            peak_rss_floor_mb=floor,
            token_budget=budget,
            tokenizer={"encoding": analysis["encoding"], "exact": analysis["exact"]},
            results=results,
            ratios=ratio,
            within_budget=within,
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
