"""Edits and unsends from `message_summary_info`.

Oracles for Apple's plists come from ../shared/chatdb-fixtures/README.md (skipped when absent);
the rest builds its plists in code.
"""

from __future__ import annotations

import plistlib
import sqlite3
from pathlib import Path

import pytest

from imessage_finetune.fixtures.summary_info import build
from imessage_finetune.fixtures.typedstream import encode
from imessage_finetune.sources.chatdb.summary_info import EditEvent, SummaryInfo, parse
from imessage_finetune.errors import TypedStreamError

SECOND_TEST_EDITS = [(743907435.319, "Second test"), (743907448.889677, "Second test was edited!")]


def read_plist(shared: Path, name: str) -> bytes:
    return (shared / "message_summary_info" / name).read_bytes()


def test_edited_plist(shared_fixtures: Path) -> None:
    """Apple's edited message: one part, four versions, the last one is the final text."""
    info = parse(read_plist(shared_fixtures, "Edited.plist"))
    assert info is not None
    assert info.edited_parts == {0}
    assert info.unsent_parts == frozenset()
    assert info.original_parts == {0}
    assert [event.text for event in info.history[0]] == [
        "First message  ",
        "Edit 1",
        "Edit 2",
        "Edited message",
    ]
    assert info.history[0][0].apple_seconds == pytest.approx(690513474.2725511)
    assert info.history[0][-1].apple_seconds == pytest.approx(690513494.0120859)
    assert info.final_text(0) == "Edited message"
    assert not info.fully_unsent


def test_edited_and_unsent_plist(shared_fixtures: Path) -> None:
    """Apple's four-part message with part 2 edited and part 3 unsent."""
    info = parse(read_plist(shared_fixtures, "EditedAndUnsent.plist"))
    assert info is not None
    assert info.original_parts == {0, 1, 2, 3}
    assert info.edited_parts == {2}
    assert info.unsent_parts == {3}
    assert info.history == {2: tuple(EditEvent(s, t) for s, t in SECOND_TEST_EDITS)}
    assert info.final_text(2) == "Second test was edited!"
    assert info.final_text(0) is None
    assert not info.fully_unsent


def test_build_writes_apples_edit_history(shared_fixtures: Path) -> None:
    """build() archives each version exactly as Apple does (same typedstream bytes)."""
    apple = plistlib.loads(read_plist(shared_fixtures, "EditedAndUnsent.plist"))
    ours = plistlib.loads(build(parts=4, edits={2: SECOND_TEST_EDITS}, unsent=[3]))
    assert ours["ec"] == apple["ec"]
    assert (ours["ep"], ours["rp"], ours["ust"]) == (apple["ep"], apple["rp"], apple["ust"])
    assert ours["otr"].keys() == apple["otr"].keys()


def test_build_without_edits_matches_an_ordinary_row(shared_fixtures: Path) -> None:
    """For a message never edited or unsent, build() gives the bytes Apple stores."""
    uri = (shared_fixtures / "imessage-exporter-test.db").as_uri() + "?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        stored = {row[0] for row in conn.execute("SELECT message_summary_info FROM message")}
    assert stored == {build()}
    assert parse(build()) == SummaryInfo(frozenset(), frozenset(), frozenset(), {})


@pytest.mark.parametrize("blob", [None, b""])
def test_missing_value_is_none(blob: bytes | None) -> None:
    """NULL or empty means no summary, not an error."""
    assert parse(blob) is None


@pytest.mark.parametrize(
    "blob",
    [
        b"not a plist",
        b"bplist00" + b"\x00" * 40,
        plistlib.dumps({"ep": [0]}, fmt=plistlib.FMT_XML),
        plistlib.dumps([1, 2], fmt=plistlib.FMT_BINARY),
        plistlib.dumps({"ep": "0"}, fmt=plistlib.FMT_BINARY),
        plistlib.dumps({"rp": [-1]}, fmt=plistlib.FMT_BINARY),
        plistlib.dumps({"otr": {"zero": {}}}, fmt=plistlib.FMT_BINARY),
        plistlib.dumps({"ec": {"0": [{"t": b""}]}}, fmt=plistlib.FMT_BINARY),
        plistlib.dumps({"ec": {"0": {"d": 1.0}}}, fmt=plistlib.FMT_BINARY),
    ],
    ids=["text", "damaged bplist", "xml plist", "array root", "ep not a list", "negative part",
         "non-numeric part", "edit without time", "versions not a list"],
)
def test_malformed_values_raise(blob: bytes) -> None:
    """A value that is not a binary plist of the known shape raises TypedStreamError."""
    with pytest.raises(TypedStreamError):
        parse(blob)


def test_unreadable_version_keeps_its_time() -> None:
    """An edit whose typedstream is damaged or missing keeps its time, with text None."""
    blob = plistlib.dumps(
        {"ec": {"0": [{"t": b"garbage", "d": 10.5}, {"d": 11}, {"t": encode("ok"), "d": 12.0}]},
         "ep": [0], "otr": {"0": {"lo": 0, "le": 2}}},
        fmt=plistlib.FMT_BINARY,
    )
    info = parse(blob)
    assert info is not None
    assert info.history[0] == (EditEvent(10.5, None), EditEvent(11.0, None), EditEvent(12.0, "ok"))
    assert info.final_text(0) == "ok"


def test_build_round_trips() -> None:
    """parse(build(...)) gives back the parts, versions, times and unsent parts."""
    edits = {
        0: [(100.0, "hi 🎉"), (160.25, "hello 🎉")],
        2: [(200.0, "a"), (201.0, "b"), (202.0, "")],
    }
    info = parse(build(parts=3, edits=edits, unsent=[1]))
    assert info is not None
    assert info.original_parts == {0, 1, 2}
    assert info.edited_parts == {0, 2}
    assert info.unsent_parts == {1}
    assert info.history == {
        part: tuple(EditEvent(seconds, text) for seconds, text in versions)
        for part, versions in edits.items()
    }
    assert info.final_text(0) == "hello 🎉"
    assert info.final_text(2) == ""
    assert not info.fully_unsent


def test_build_original_ranges() -> None:
    """otr ranges follow the original texts in UTF-16 units; unknown parts get length 0."""
    raw = plistlib.loads(build(parts=3, edits={0: [(1.0, "🎉ab"), (2.0, "x")]}, unsent=[2]))
    assert raw["otr"] == {
        "0": {"lo": 0, "le": 4},
        "1": {"lo": 4, "le": 0},
        "2": {"lo": 4, "le": 0},
    }
    assert raw["amc"] == 0 and raw["ust"] is True


def test_build_is_deterministic() -> None:
    """The same arguments give byte-identical plists."""
    args = {"parts": 2, "edits": {1: [(5.0, "a"), (6.0, "b")]}, "unsent": [0]}
    assert build(**args) == build(**args)


@pytest.mark.parametrize(
    ("parts", "unsent", "expected"),
    [(1, [0], True), (3, [0, 1, 2], True), (3, [2], False), (1, [], False)],
)
def test_fully_unsent(parts: int, unsent: list[int], expected: bool) -> None:
    """A message is fully unsent only when every original part was unsent."""
    info = parse(build(parts=parts, unsent=unsent))
    assert info is not None
    assert info.fully_unsent is expected


def test_unsent_without_original_ranges_is_fully_unsent() -> None:
    """rp without otr (nothing left to show) counts as fully unsent."""
    info = parse(plistlib.dumps({"rp": [0]}, fmt=plistlib.FMT_BINARY))
    assert info is not None and info.fully_unsent


@pytest.mark.parametrize(
    "kwargs",
    [
        {"parts": 0},
        {"parts": 2, "unsent": [2]},
        {"parts": 1, "edits": {1: [(1.0, "a"), (2.0, "b")]}},
        {"parts": 1, "edits": {0: [(1.0, "only the original")]}},
    ],
    ids=["no parts", "unsent out of range", "edit out of range", "edit without a new version"],
)
def test_build_rejects_impossible_messages(kwargs: dict[str, object]) -> None:
    """build() refuses part indexes a message cannot have and edits without a new version."""
    with pytest.raises(ValueError):
        build(**kwargs)  # type: ignore[arg-type]
