"""The typedstream (`attributedBody`) decoder and encoder.

Oracles for the real Apple blobs come from ../shared/chatdb-fixtures/README.md; those tests
skip when the fixtures are absent. Round-trip and robustness tests build their blobs in code.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest

from imessage_finetune.fixtures.typedstream import TypedNumber, encode
from imessage_finetune.sources.chatdb.typedstream import (
    PART_KEY,
    AttributedString,
    Run,
    decode,
    decode_text,
)
from imessage_finetune.errors import TypedStreamError

GUID = "__kIMFileTransferGUIDAttributeName"
DIRECTION = "__kIMBaseWritingDirectionAttributeName"
MENTION = "__kIMMentionConfirmedMention"
ATTACHMENT_TEXT = (
    "\ufffcThis is how the notes look to me fyi, in case it helps make sense of anything"
)
ATTACHMENT_RUN_1 = {
    GUID: "at_0_2E5F12C3-E649-48AA-954D-3EA67C016BCC",
    "__kIMInlineMediaHeightAttributeName": 1139.0,
    DIRECTION: -1,
    PART_KEY: 0,
    "__kIMFilenameAttributeName": "Messages Image(785748029).png",
    "__kIMInlineMediaWidthAttributeName": 952.0,
}
MULTIPART_GUID = "at_{}_F0668F79-20C2-49C9-A87F-1B007ABB0CED"

# name -> (text, [(length, attributes)]) as listed in the fixtures README.
ORACLES: dict[str, tuple[str, list[tuple[int, dict[str, object]]]]] = {
    "AttributedBodyTextOnly": ("Noter test", [(10, {PART_KEY: 0})]),
    "AttributedBodyTextOnly2": ("Test 3", [(6, {DIRECTION: -1, PART_KEY: 0})]),
    "WeirdText": ("𝖍𝖊𝖑𝖑𝖔 𝖜𝖔𝖗𝖑𝖉", [(21, {PART_KEY: 0})]),
    "Mention": (
        "Test Dad ",
        [(5, {PART_KEY: 0}), (3, {MENTION: "+15558675309", PART_KEY: 0}), (1, {PART_KEY: 0})],
    ),
    "MultiPart": (
        "\ufffctest 1\ufffctest 2 \ufffctest 3",
        [
            (1, {GUID: MULTIPART_GUID.format(0), PART_KEY: 0}),
            (6, {PART_KEY: 1}),
            (1, {GUID: MULTIPART_GUID.format(2), PART_KEY: 2}),
            (7, {PART_KEY: 3}),
            (1, {GUID: MULTIPART_GUID.format(4), PART_KEY: 4}),
            (6, {PART_KEY: 5}),
        ],
    ),
    "Attachment": (
        ATTACHMENT_TEXT,
        [(1, ATTACHMENT_RUN_1), (77, {DIRECTION: -1, PART_KEY: 1})],
    ),
}
LONG_MESSAGE_SHA256 = "21f7bb026f31a8b4d6a46cfcd06f1561a49aa3f50ca669ce047f66411871134d"
FIXTURE_NAMES = [*ORACLES, "LongMessage"]


def read_blob(shared: Path, name: str) -> bytes:
    return (shared / "typedstream" / name).read_bytes()


def runs_of(decoded: AttributedString) -> list[tuple[int, dict[str, object]]]:
    return [(run.length, dict(run.attributes)) for run in decoded.runs]


# --- Apple's blobs --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ORACLES))
def test_fixture_blob_decodes_to_its_oracle(shared_fixtures: Path, name: str) -> None:
    """decode gives the exact text and runs (UTF-16 lengths, typed values) Apple stored."""
    text, runs = ORACLES[name]
    decoded = decode(read_blob(shared_fixtures, name))
    assert decoded.text == text
    assert runs_of(decoded) == runs


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_decode_text_agrees_with_decode_on_fixtures(shared_fixtures: Path, name: str) -> None:
    """The fast path returns exactly the text of the full parse."""
    blob = read_blob(shared_fixtures, name)
    assert decode_text(blob) == decode(blob).text


def test_long_message_with_two_byte_length(shared_fixtures: Path) -> None:
    """A 2 359-byte text behind an 0x81 length prefix decodes whole, one run over all of it."""
    blob = read_blob(shared_fixtures, "LongMessage")
    assert b"+\x81\x37\x09Sed nibh velit," in blob
    decoded = decode(blob)
    assert len(decoded.text) == 2359
    assert decoded.text.startswith("Sed nibh velit, sodales et facilisis ut")
    assert decoded.text.endswith("Curabitur consectetur cursus sem nec accumsan.")
    assert hashlib.sha256(decoded.text.encode()).hexdigest() == LONG_MESSAGE_SHA256
    assert runs_of(decoded) == [(2359, {PART_KEY: 0})]


def test_attachment_parts(shared_fixtures: Path) -> None:
    """parts() cuts the attachment placeholder from the caption by part index."""
    decoded = decode(read_blob(shared_fixtures, "Attachment"))
    assert decoded.parts() == [(0, "\ufffc"), (1, ATTACHMENT_TEXT[1:])]


def test_multipart_parts(shared_fixtures: Path) -> None:
    """Every part of a multi-attachment message comes out in order."""
    decoded = decode(read_blob(shared_fixtures, "MultiPart"))
    assert decoded.parts() == [
        (0, "\ufffc"),
        (1, "test 1"),
        (2, "\ufffc"),
        (3, "test 2 "),
        (4, "\ufffc"),
        (5, "test 3"),
    ]


def apple_inputs(shared: Path) -> dict[str, tuple[str, list[tuple[dict[str, object], int]], bool]]:
    """encode() arguments that should give each fixture's bytes (q-typed numbers marked)."""
    part = {PART_KEY: 0}
    return {
        "AttributedBodyTextOnly": ("Noter test", [({PART_KEY: 0}, 10)], True),
        "AttributedBodyTextOnly2": (
            "Test 3",
            [({DIRECTION: TypedNumber(-1), PART_KEY: TypedNumber(0)}, 6)],
            False,
        ),
        "LongMessage": (decode(read_blob(shared, "LongMessage")).text, [(part, 2359)], True),
        "WeirdText": ("𝖍𝖊𝖑𝖑𝖔 𝖜𝖔𝖗𝖑𝖉", [(part, 21)], True),
        "Mention": (
            "Test Dad ",
            [(part, 5), ({MENTION: "+15558675309", PART_KEY: 0}, 3), (part, 1)],
            True,
        ),
        "Attachment": (
            ATTACHMENT_TEXT,
            [
                ({**ATTACHMENT_RUN_1, DIRECTION: TypedNumber(-1)}, 1),
                ({DIRECTION: TypedNumber(-1), PART_KEY: TypedNumber(1)}, 77),
            ],
            True,
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["AttributedBodyTextOnly", "AttributedBodyTextOnly2", "LongMessage", "WeirdText", "Mention",
     "Attachment"],
)
def test_encoder_reproduces_apple_bytes(shared_fixtures: Path, name: str) -> None:
    """encode writes Apple's exact bytes (class chains, shared strings, uniqued NSNumbers)."""
    text, runs, mutable = apple_inputs(shared_fixtures)[name]
    assert encode(text, runs, mutable=mutable) == read_blob(shared_fixtures, name)


def test_default_runs_reproduce_a_plain_message(shared_fixtures: Path) -> None:
    """Without runs, encode writes what Messages writes for plain text (one part-0 run)."""
    assert encode("Noter test") == read_blob(shared_fixtures, "AttributedBodyTextOnly")


def test_multipart_reencodes_to_the_same_content(shared_fixtures: Path) -> None:
    """Where Apple re-uses key instances, the re-encoded blob still decodes identically."""
    decoded = decode(read_blob(shared_fixtures, "MultiPart"))
    blob = encode(decoded.text, [(run.attributes, run.length) for run in decoded.runs])
    assert decode(blob) == decoded


def test_fixture_database_rows(shared_fixtures: Path) -> None:
    """Real rows decode, including an NSURL link and an NSData data-detector payload."""
    uri = (shared_fixtures / "imessage-exporter-test.db").as_uri() + "?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        rows = dict(conn.execute("SELECT ROWID, attributedBody FROM message"))
    url = "https://www.ghacks.net/2020/01/23/lastpass-no-longer-listed-on-the-chrome-web-store/"
    link = decode(rows[123445])
    assert link.text == url
    assert len(link.runs) == 1 and link.runs[0].length == len(url)
    attributes = link.runs[0].attributes
    assert attributes["__kIMLinkAttributeName"] == url
    assert attributes[PART_KEY] == 0
    detected = attributes["__kIMDataDetectedAttributeName"]
    assert isinstance(detected, bytes) and detected.startswith(b"bplist00")
    plain = decode(rows[452567])
    assert plain.text == "I’m going to try to eat as quick as possible and then come over"
    for blob in rows.values():
        assert decode_text(blob) == decode(blob).text


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_truncated_fixture_blobs_raise(shared_fixtures: Path, name: str) -> None:
    """Every cut of a real blob raises TypedStreamError; decode_text too while the text is cut."""
    blob = read_blob(shared_fixtures, name)
    text_end = blob.index(decode(blob).text.encode()) + len(decode(blob).text.encode())
    for size in range(len(blob)):
        with pytest.raises(TypedStreamError):
            decode(blob[:size])
        if size <= text_end:
            with pytest.raises(TypedStreamError):
                decode_text(blob[:size])


# --- round trips, no fixtures needed ------------------------------------------------------

EDGE_TEXTS = {
    "empty": "",
    "ascii": "hello there",
    "astral": "🎉 party 👍🏽 𝖍𝖊𝖑𝖑𝖔",
    "contains NSString": "NSString NSMutableString streamtyped \x84\x85\x86 +",
    "reverse c": "reverse c: ↄ ok",
    "86 84 in UTF-8": "\u1184 and \U0001f184 and \u2184",
    "one byte length limit": "x" * 127,
    "two byte length": "é" * 64,
    "largest two byte length": "y" * 32767,
    "four byte length": "z" * 32768,
    "70 KB": ("Lorem ipsum ↄ 🎉 NSString " * 3000)[:70000],
}


@pytest.mark.parametrize("mutable", [True, False])
@pytest.mark.parametrize("text", list(EDGE_TEXTS.values()), ids=list(EDGE_TEXTS))
def test_round_trip_text_and_default_runs(text: str, mutable: bool) -> None:
    """decode(encode(text)) gives the text back with one part-0 run of its UTF-16 length."""
    blob = encode(text, mutable=mutable)
    units = len(text.encode("utf-16-le")) // 2
    expected = (Run(units, {PART_KEY: 0}),) if text else ()
    assert decode(blob) == AttributedString(text, expected)
    assert decode_text(blob) == text


@pytest.mark.parametrize(
    ("size", "prefix"),
    [(127, b"+\x7f"), (128, b"+\x81\x80\x00"), (32767, b"+\x81\xff\x7f"),
     (32768, b"+\x82\x00\x80\x00\x00"), (70000, b"+\x82\x70\x11\x01\x00")],
)
def test_length_prefixes(size: int, prefix: bytes) -> None:
    """Byte lengths use one byte up to 127, 0x81 + int16 up to 32 767, else 0x82 + int32."""
    assert prefix + b"a" in encode("a" * size)


def test_round_trip_attribute_values() -> None:
    """Every supported attribute type comes back as the documented Python value."""
    attributes = {
        "string": "value",
        "small": 7,
        "negative": -1000,
        "int32": 2_000_000_000,
        "int64": 2**40,
        "negative int64": -(2**40),
        "fraction": 0.25,
        "integral float": 1139.0,
        "big float": 1e20,
        "flag": True,
        "typed": TypedNumber(-1, "q"),
        "char": TypedNumber(-3, "c"),
        "data": b"\x00\x84\x86 bytes",
        "nested": {"inner": "x", "deeper": {"n": 1}},
        PART_KEY: 0,
    }
    decoded = decode(encode("ab", [(attributes, 2)]))
    assert decoded.runs[0].attributes == {
        **attributes,
        "flag": 1,
        "typed": -1,
        "char": -3,
    }
    values = decoded.runs[0].attributes
    assert isinstance(values["integral float"], float)
    assert isinstance(values["small"], int)


def test_runs_reuse_dictionaries_by_value_and_type() -> None:
    """A repeated dictionary is written once and re-used; 1 and 1.0 stay distinct."""
    first, second = {PART_KEY: 1}, {PART_KEY: 1.0}
    blob = encode("abcd", [(first, 1), (second, 1), (dict(first), 1), (second, 1)])
    assert blob.count(b"NSDictionary") == 1
    assert blob.count(b"\x84\x02iI") == 1
    runs = decode(blob).runs
    assert [run.attributes[PART_KEY] for run in runs] == [1, 1.0, 1, 1.0]
    assert [type(run.attributes[PART_KEY]) for run in runs] == [int, float, int, float]


def test_parts_merge_runs_and_count_utf16_units() -> None:
    """parts() merges consecutive same-part runs and cuts astral characters whole."""
    text = "🎉a👍b\ufffcc"
    runs = [
        ({PART_KEY: 0, "bold": 1}, 2),
        ({PART_KEY: 0}, 1),
        ({PART_KEY: 1}, 3),
        ({GUID: "at_2"}, 1),
        ({"other": "x"}, 1),
    ]
    decoded = decode(encode(text, runs))
    assert decoded.parts() == [(0, "🎉a"), (1, "👍b"), (None, "\ufffcc")]


def test_parts_of_empty_text() -> None:
    """An empty message has no parts."""
    assert decode(encode("")).parts() == []


def test_unknown_class_becomes_a_placeholder() -> None:
    """An object of an unknown class is skipped generically and shown as <ClassName>."""
    blob = encode("hi", [({"payload": b"\x01\x02", PART_KEY: 0}, 2)])
    patched = blob.replace(b"NSData", b"NSFoob")
    assert decode(patched).runs[0].attributes == {"payload": "<NSFoob>", PART_KEY: 0}


def test_encode_rejects_runs_that_do_not_cover_the_text() -> None:
    """Run lengths must add up to the UTF-16 length (an astral character counts two)."""
    with pytest.raises(ValueError):
        encode("🎉", [({PART_KEY: 0}, 1)])
    with pytest.raises(ValueError):
        encode("ab", [({PART_KEY: 0}, 3), ({PART_KEY: 1}, -1)])


def test_encode_rejects_unsupported_values() -> None:
    """Values with no archived form fail loudly instead of being dropped."""
    with pytest.raises(TypeError):
        encode("a", [({"when": object()}, 1)])
    with pytest.raises(ValueError):
        TypedNumber(1, "Q")


# --- malformed input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"hello",
        b"\x04\x0bstreamtyped",
        b"\x04\x0btypedstream\x81\xe8\x03\x84\x01@",
        b"bplist00\xd0\x08\x00\x00\x00\x00\x00\x00\x01\x01",
        b"\x04\x0bstreamtyped\x81\xe8\x03",
        b"\x04\x0bstreamtyped\x81\xe8\x03\x84\x01i\x01",
        b"\x04\x0bstreamtyped\x81\xe8\x03\x84\x01@\x85",
    ],
    ids=["empty", "text", "short header", "big-endian", "bplist", "header only", "not an object",
         "nil root"],
)
def test_garbage_raises(blob: bytes) -> None:
    """Anything that is not an archived attributed string raises TypedStreamError."""
    with pytest.raises(TypedStreamError):
        decode(blob)
    with pytest.raises(TypedStreamError):
        decode_text(blob)


def test_root_that_is_a_plain_string_raises() -> None:
    """A typedstream whose root is an NSString, not an attributed string, is rejected."""
    blob = encode("abc")
    string_start = blob.index(b"\x84\x84\x84\x0fNSMutableString")
    plain = blob[:16] + b"\x84\x01@" + blob[string_start:].replace(b"\x95", b"\x85", 1)
    plain = plain[: plain.index(b"\x86") + 1]
    with pytest.raises(TypedStreamError):
        decode(plain)
    with pytest.raises(TypedStreamError):
        decode_text(plain)


def test_trailing_bytes_raise() -> None:
    """Bytes after the root object mean the blob is not what it seems."""
    with pytest.raises(TypedStreamError):
        decode(encode("abc") + b"\x00")


def test_run_lengths_must_cover_the_text() -> None:
    """A run sum that differs from the text's UTF-16 length is rejected by decode; the
    fast path, which does not read runs, still returns the text."""
    blob = encode("abc")
    damaged = blob.replace(b"\x84\x02iI\x01\x03", b"\x84\x02iI\x01\x02")
    assert damaged != blob
    with pytest.raises(TypedStreamError):
        decode(damaged)
    assert decode_text(damaged) == "abc"


def test_reference_out_of_range_raises() -> None:
    """A back-reference past the end of its table is malformed."""
    blob = encode("abc")
    damaged = blob.replace(b"\x01\x03\x92\x84", b"\x01\x03\x7f\x84")
    assert damaged != blob
    with pytest.raises(TypedStreamError):
        decode(damaged)


def test_nesting_is_bounded() -> None:
    """Deeply nested objects raise instead of exhausting the stack; moderate nesting is fine."""
    def nested(depth: int) -> dict[str, object]:
        value: dict[str, object] = {"leaf": 1}
        for _ in range(depth):
            value = {"child": value}
        return value

    assert decode(encode("a", [(nested(10), 1)])).runs[0].attributes["child"]
    with pytest.raises(TypedStreamError):
        decode(encode("a", [(nested(100), 1)]))


def test_decode_text_reuses_parsed_prefixes_correctly() -> None:
    """Blobs sharing a parsed prefix each give their own text; a cut one still raises."""
    first, second = encode("first text"), encode("second, longer text")
    assert decode_text(first) == "first text"
    assert decode_text(second) == "second, longer text"
    assert decode_text(encode("immutable", mutable=False)) == "immutable"
    with pytest.raises(TypedStreamError):
        decode_text(second[: second.index(b"longer")])


def test_mutated_blobs_raise_only_typed_errors() -> None:
    """Random damage yields TypedStreamError or a valid decode, never another exception,
    and decode_text agrees with every decode that succeeds."""
    rng = random.Random(20240601)
    seeds = [
        encode("hello 🎉 NSString ↄ"),
        encode("ab", [({"s": "x", "n": 2**40, "f": 0.5, "d": b"xy", "m": {"k": 1}}, 2)]),
        encode("\ufffcpic", [({GUID: "at_0", PART_KEY: 0}, 1), ({PART_KEY: 1}, 3)], mutable=False),
    ]
    for _ in range(3000):
        blob = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(blob))
            action = rng.random()
            if action < 0.6:
                blob[position] = rng.randrange(256)
            elif action < 0.8:
                del blob[position]
            else:
                blob.insert(position, rng.randrange(256))
        data = bytes(blob)
        try:
            text = decode(data).text
        except TypedStreamError:
            try:
                decode_text(data)
            except TypedStreamError:
                pass
        else:
            assert decode_text(data) == text
