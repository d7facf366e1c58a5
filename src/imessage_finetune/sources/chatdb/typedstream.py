"""Read the typedstream (NSArchiver) blobs of `message.attributedBody`.

Messages stores the text of many rows only here: an archived `NSAttributedString` whose
string is UTF-8 and whose attribute runs count UTF-16 units. `decode` parses the whole
stream with both reference tables (grammar: notes/chatdb.md section 6); `decode_text` is the
hot path that parses structurally only as far as the string's bytes. The writer of such
blobs, for test fixtures and the demo database, is `fixtures.typedstream`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, pairwise
from typing import TypeVar

from imessage_finetune.errors import TypedStreamError

PART_KEY = "__kIMMessagePartAttributeName"
"""Attribute holding a run's message-part index (the `N` of `p:N/GUID` in reply threads)."""

# Little-endian NeXTSTEP typedstream, streamer version 4, system version 1000.
HEADER = b"\x04\x0bstreamtyped\x81\xe8\x03"
FLOAT, NEW, NIL, END = 0x83, 0x84, 0x85, 0x86
# Tags 0x80..0x91 are reserved; these three announce a wider little-endian integer.
_INT_WIDTHS = {0x81: 2, 0x82: 4, 0x87: 8}
# A stored reference r points at table index r + 110, so 0x92 (-110) is entry 0.
REF_BIAS = 110
_MAX_DEPTH = 64
_SIGNED = frozenset(b"silq")
_UNSIGNED = frozenset(b"SILQ")
_AT, _BYTES, _CSTRING, _CLASS = ord("@"), ord("+"), ord("*"), ord("#")
_CHAR, _UCHAR, _BOOL = ord("c"), ord("C"), ord("B")
_DOUBLE, _FLOAT32 = ord("d"), ord("f")
_ARRAY, _STRUCT = ord("["), ord("{")
_OPENERS, _CLOSERS = frozenset(b"[{("), frozenset(b"]})")

_T = TypeVar("_T")


@dataclass(frozen=True)
class Run:
    """A stretch of the text sharing one attribute dictionary."""

    length: int
    """UTF-16 code units, as Apple stores it."""
    attributes: Mapping[str, object]
    """NSString -> str, NSNumber -> int | float, NSURL -> str, NSData -> bytes,
    NSDictionary -> dict, any other object -> a placeholder such as "<NSColor>"."""


@dataclass(frozen=True)
class AttributedString:
    """The decoded root object: the text and its attribute runs (which cover the text)."""

    text: str
    runs: tuple[Run, ...]

    def parts(self) -> list[tuple[int | None, str]]:
        """The text cut by the `__kIMMessagePartAttributeName` attribute, in order, consecutive
        runs with the same part merged; (None, text) where runs carry no part index."""
        merged: list[tuple[int | None, int]] = []
        for run in self.runs:
            part = run.attributes.get(PART_KEY)
            index = part if isinstance(part, int) else None
            if merged and merged[-1][0] == index:
                merged[-1] = (index, merged[-1][1] + run.length)
            else:
                merged.append((index, run.length))
        pieces, rest = _cut_utf16(self.text, [length for _, length in merged])
        result = [(index, piece) for (index, _), piece in zip(merged, pieces, strict=True)]
        if rest:  # only for hand-built values whose runs stop short of the text
            if result and result[-1][0] is None:
                result[-1] = (None, result[-1][1] + rest)
            else:
                result.append((None, rest))
        return result


def decode(blob: bytes) -> AttributedString:
    """Parse a whole `attributedBody` typedstream: text and attribute runs.

    Raises TypedStreamError if the blob is not a little-endian typedstream holding one
    NSAttributedString, is truncated or has trailing bytes, nests too deeply, or its run
    lengths do not add up to the UTF-16 length of the text.
    """
    reader = _Reader(blob)
    if reader.shared_string(reader.byte()) != b"@":
        raise TypedStreamError("typedstream does not start with an object")
    root = reader.read_object(reader.byte())
    if not isinstance(root, AttributedString):
        raise TypedStreamError("typedstream root is not an attributed string")
    if reader.pos != len(blob):
        raise TypedStreamError("trailing bytes after the typedstream root object")
    return root


# Byte prefixes that ended, for an earlier blob, right before the string's length field.
# Parsing is deterministic over bytes, so a blob with the same prefix reaches the same state
# there; Apple writes only a couple of distinct prefixes, so the common case skips the parse.
_text_prefixes: tuple[bytes, ...] = ()
_MAX_PREFIXES = 8


def decode_text(blob: bytes) -> str:
    """Return only the text of an `attributedBody` typedstream, quickly.

    Parses the header, the root object's class chain and the string object up to its end,
    but not the attribute runs, so it accepts a few blobs that `decode` rejects (damaged runs);
    on every blob `decode` accepts, it returns the same text. Raises TypedStreamError.
    """
    global _text_prefixes
    for prefix in _text_prefixes:
        if blob.startswith(prefix):
            pos = len(prefix)
            break
    else:
        pos = _text_start(blob)
        _text_prefixes = (blob[:pos], *_text_prefixes[: _MAX_PREFIXES - 1])
    if pos >= len(blob):
        raise TypedStreamError("truncated typedstream")
    head = blob[pos]
    if head < 0x80 or head >= 0x92:
        size, pos = head, pos + 1
    else:
        width = _INT_WIDTHS.get(head)
        if width is None:
            raise TypedStreamError("unexpected tag where an integer belongs")
        size = int.from_bytes(blob[pos + 1 : pos + 1 + width], "little")
        pos += 1 + width
    end = pos + size
    # The string object must close right after its bytes; this also catches truncation.
    if end >= len(blob) or blob[end] != END:
        raise TypedStreamError("truncated typedstream")
    return blob[pos:end].decode("utf-8", "replace")


def _text_start(blob: bytes) -> int:
    """Parse up to the text's byte length and return its offset (the slow half of decode_text)."""
    reader = _Reader(blob)
    if reader.shared_string(reader.byte()) != b"@" or reader.byte() != NEW:
        raise TypedStreamError("typedstream does not start with an object")
    reader.objects.append(_PENDING)
    if "NSAttributedString" not in reader.class_chain(reader.byte()):
        raise TypedStreamError("typedstream root is not an attributed string")
    if reader.shared_string(reader.byte()) != b"@" or reader.byte() != NEW:
        raise TypedStreamError("attributed string does not start with its text")
    reader.objects.append(_PENDING)
    if "NSString" not in reader.class_chain(reader.byte()):
        raise TypedStreamError("attributed string does not start with its text")
    if reader.shared_string(reader.byte()) != b"+":
        raise TypedStreamError("malformed NSString")
    return reader.pos


class _Class:
    """An archived class in the object table; `names` is its chain, most-derived first."""

    __slots__ = ("names",)

    def __init__(self) -> None:
        self.names: tuple[str, ...] | None = None  # None until the superclasses are read


class _CString:
    """An archived C string in the object table (NSNumber type codes)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value


# Marks the object-table slot of an object whose contents are still being read.
_PENDING = object()

_Group = tuple[bytes, list[object]]


class _Reader:
    """Cursor over one typedstream plus its shared-string and object reference tables."""

    __slots__ = ("budget", "data", "depth", "objects", "pos", "strings")

    def __init__(self, data: bytes) -> None:
        if not data.startswith(HEADER):
            raise TypedStreamError("not a typedstream (bad header)")
        self.data = data
        self.pos = len(HEADER)
        self.strings: list[bytes] = []
        self.objects: list[object] = []
        # Every value costs at least one byte except empty arrays and structs, so this bounds
        # the work a hostile type string (referenced over and over) can cause.
        self.budget = 2 * len(data) + 64
        self.depth = 0

    def byte(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise TypedStreamError("truncated typedstream")
        self.pos = pos + 1
        return self.data[pos]

    def take(self, size: int) -> bytes:
        start = self.pos
        end = start + size
        if size < 0 or end > len(self.data):
            raise TypedStreamError("truncated typedstream")
        self.pos = end
        return self.data[start:end]

    def integer(self, head: int, signed: bool) -> int:
        if head < 0x80:
            return head
        if head >= 0x92:
            return head - 0x100 if signed else head
        width = _INT_WIDTHS.get(head)
        if width is None:
            raise TypedStreamError("unexpected tag where an integer belongs")
        return int.from_bytes(self.take(width), "little", signed=signed)

    def lookup(self, head: int, table: list[_T]) -> _T:
        index = self.integer(head, True) + REF_BIAS
        if not 0 <= index < len(table):
            raise TypedStreamError("typedstream reference out of range")
        return table[index]

    def shared_string(self, head: int) -> bytes:
        if head == NEW:
            value = self.take(self.integer(self.byte(), False))
            self.strings.append(value)
            return value
        return self.lookup(head, self.strings)

    def class_chain(self, head: int) -> tuple[str, ...]:
        """Read a class (new ones with their superclasses); its names, or () for nil."""
        fresh: list[tuple[_Class, str]] = []
        while head == NEW:
            name = self.shared_string(self.byte()).decode("utf-8", "replace")
            self.integer(self.byte(), True)  # class version: the field layouts we read never vary
            cls = _Class()
            self.objects.append(cls)  # a class takes its slot before its superclass does
            fresh.append((cls, name))
            head = self.byte()
        names: tuple[str, ...] = ()
        if head != NIL:
            known = self.lookup(head, self.objects)
            if not isinstance(known, _Class) or known.names is None:
                raise TypedStreamError("typedstream class reference is not a class")
            names = known.names
        for cls, name in reversed(fresh):
            names = (name, *names)
            cls.names = names
        return names

    def c_string(self, head: int) -> bytes | None:
        if head == NIL:
            return None
        if head == NEW:
            entry = _CString(self.shared_string(self.byte()))
            self.objects.append(entry)
            return entry.value
        found = self.lookup(head, self.objects)
        if not isinstance(found, _CString):
            raise TypedStreamError("typedstream C string reference is not a C string")
        return found.value

    def read_object(self, head: int) -> object:
        if head == NIL:
            return None
        if head != NEW:
            found = self.lookup(head, self.objects)
            if found is _PENDING or isinstance(found, (_Class, _CString)):
                raise TypedStreamError("typedstream object reference is not a finished object")
            return found
        self.enter()
        slot = len(self.objects)
        self.objects.append(_PENDING)  # the object's slot comes before its classes'
        names = self.class_chain(self.byte())
        if not names:
            raise TypedStreamError("typedstream object without a class")
        groups: list[_Group] = []
        head = self.byte()
        while head != END:
            types = self.shared_string(head)
            groups.append((types, [self.value(code) for code in _split_types(types)]))
            head = self.byte()
        result = _convert(names, groups)
        self.objects[slot] = result
        self.depth -= 1
        return result

    def value(self, code: bytes) -> object:
        self.budget -= 1
        if self.budget < 0:
            raise TypedStreamError("typedstream too complex")
        kind = code[0]
        if kind in _SIGNED:
            return self.integer(self.byte(), True)
        if kind in _UNSIGNED:
            return self.integer(self.byte(), False)
        if kind == _AT:
            return self.read_object(self.byte())
        if kind == _BYTES:
            return self.take(self.integer(self.byte(), False))
        if kind == _CSTRING:
            return self.c_string(self.byte())
        if kind == _CHAR:
            raw = self.byte()  # chars are one literal byte, never tagged
            return raw - 0x100 if raw >= 0x80 else raw
        if kind in (_UCHAR, _BOOL):
            return self.byte()
        if kind in (_DOUBLE, _FLOAT32):
            head = self.byte()
            if head != FLOAT:
                return float(self.integer(head, True))  # Apple writes integral floats as ints
            fmt = "<d" if kind == _DOUBLE else "<f"
            return float(struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0])
        if kind == _CLASS:
            return self.class_chain(self.byte())
        if kind == _ARRAY:
            return self.array(code)
        if kind == _STRUCT:
            return self.struct(code)
        raise TypedStreamError("unsupported type in typedstream")

    def array(self, code: bytes) -> object:
        body = code[1:-1]
        element = body.lstrip(b"0123456789")
        digits = len(body) - len(element)
        if code[-1] != ord("]") or not 0 < digits <= 9 or not element:
            raise TypedStreamError("malformed array type in typedstream")
        count = int(body[:digits])
        if element in (b"c", b"C"):
            return self.take(count)
        if len(_split_types(element)) != 1:
            raise TypedStreamError("malformed array type in typedstream")
        self.enter()
        items = [self.value(element) for _ in range(count)]
        self.depth -= 1
        return items

    def struct(self, code: bytes) -> object:
        equals = code.find(b"=")
        if code[-1] != ord("}") or equals < 0:
            raise TypedStreamError("malformed struct type in typedstream")
        fields = code[equals + 1 : -1]
        if not fields:
            return ()
        self.enter()
        values = tuple(self.value(field) for field in _split_types(fields))
        self.depth -= 1
        return values

    def enter(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise TypedStreamError("typedstream nested too deeply")


@lru_cache(maxsize=256)
def _split_types(types: bytes) -> tuple[bytes, ...]:
    """Split a group's type string into one type per value: b"iI" -> (b"i", b"I")."""
    codes: list[bytes] = []
    start = 0
    while start < len(types):
        end = start + 1
        if types[start] in _OPENERS:
            depth = 0
            for end in range(start, len(types) + 1):
                if end == len(types):
                    raise TypedStreamError("unterminated type in typedstream")
                if types[end] in _OPENERS:
                    depth += 1
                elif types[end] in _CLOSERS:
                    depth -= 1
                    if depth == 0:
                        end += 1
                        break
        codes.append(types[start:end])
        start = end
    if not codes:
        raise TypedStreamError("empty type string in typedstream")
    return tuple(codes)


def _convert(names: tuple[str, ...], groups: list[_Group]) -> object:
    """Turn a finished object into a Python value by its most-derived known class."""
    for name in names:
        handler = _HANDLERS.get(name)
        if handler is not None:
            return handler(names[0], groups)
    return f"<{names[0]}>"


def _single(groups: list[_Group], index: int, types: bytes) -> object:
    """The one value of group `index`, which must have type string `types`."""
    if index >= len(groups) or groups[index][0] != types or len(groups[index][1]) != 1:
        raise TypedStreamError("malformed object in typedstream")
    return groups[index][1][0]


def _string(cls: str, groups: list[_Group]) -> str:
    data = _single(groups, 0, b"+")
    if len(groups) != 1 or not isinstance(data, bytes):
        raise TypedStreamError("malformed NSString")
    return data.decode("utf-8", "replace")


def _number(cls: str, groups: list[_Group]) -> object:
    # NSValue: the type as a C string, then one group of exactly that type.
    objc_type = _single(groups, 0, b"*")
    if len(groups) != 2 or groups[1][0] != objc_type:
        raise TypedStreamError("malformed NSValue")
    values = groups[1][1]
    if len(values) == 1 and isinstance(values[0], (int, float)):
        return values[0]
    return f"<{cls}>"  # an NSValue holding a struct (e.g. a range)


def _dictionary(cls: str, groups: list[_Group]) -> dict[str, object]:
    count = _single(groups, 0, b"i")
    if not isinstance(count, int) or len(groups) != 1 + 2 * count:
        raise TypedStreamError("malformed NSDictionary")
    result: dict[str, object] = {}
    for index in range(1, len(groups), 2):
        key = _single(groups, index, b"@")
        if not isinstance(key, str):
            raise TypedStreamError("NSDictionary key is not a string")
        result[key] = _single(groups, index + 1, b"@")
    return result


def _url(cls: str, groups: list[_Group]) -> str:
    relative = _single(groups, 0, b"c")
    if relative == 0 and len(groups) == 2:
        address = _single(groups, 1, b"@")
        if isinstance(address, str):
            return address
    return f"<{cls}>"  # a URL relative to a base URL: not used in message attributes


def _data(cls: str, groups: list[_Group]) -> bytes:
    size = _single(groups, 0, b"i")
    payload = groups[1][1][0] if len(groups) == 2 and len(groups[1][1]) == 1 else None
    if not isinstance(payload, bytes) or len(payload) != size:
        raise TypedStreamError("malformed NSData")
    return payload


def _attributed(cls: str, groups: list[_Group]) -> AttributedString:
    text = _single(groups, 0, b"@")
    if not isinstance(text, str):
        raise TypedStreamError("attributed string text is not a string")
    runs: list[Run] = []
    dictionaries: list[Mapping[str, object]] = []
    index = 1
    while index < len(groups):
        types, values = groups[index]
        index += 1
        if types != b"iI":
            raise TypedStreamError("malformed attribute run")
        number, length = values
        assert isinstance(number, int) and isinstance(length, int)  # "iI" reads two ints
        if number == len(dictionaries) + 1:  # first use: the dictionary follows
            attributes = _single(groups, index, b"@")
            index += 1
            if not isinstance(attributes, dict):
                raise TypedStreamError("attribute run without a dictionary")
            dictionaries.append(attributes)
        elif 1 <= number <= len(dictionaries):
            attributes = dictionaries[number - 1]
        else:
            raise TypedStreamError("attribute run refers to an unknown dictionary")
        runs.append(Run(length, attributes))
    if sum(run.length for run in runs) != utf16_len(text):
        raise TypedStreamError("attribute runs do not cover the text")
    return AttributedString(text, tuple(runs))


_HANDLERS: dict[str, Callable[[str, list[_Group]], object]] = {
    "NSString": _string,
    "NSAttributedString": _attributed,
    "NSDictionary": _dictionary,
    "NSNumber": _number,
    "NSValue": _number,
    "NSURL": _url,
    "NSData": _data,
}


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (characters above U+FFFF count two)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _cut_utf16(text: str, lengths: Sequence[int]) -> tuple[list[str], str]:
    """Cut `text` into pieces of the given UTF-16 lengths; also return what is left over.

    A cut inside a surrogate pair keeps the whole character in the earlier piece, so the
    pieces always join back to `text`.
    """
    if utf16_len(text) == len(text):
        ends = list(accumulate(lengths, initial=0))
        return [text[a:b] for a, b in pairwise(ends)], text[ends[-1] :]
    pieces: list[str] = []
    start = position = units = target = 0
    for length in lengths:
        target += length
        while units < target and position < len(text):
            units += 2 if ord(text[position]) > 0xFFFF else 1
            position += 1
        pieces.append(text[start:position])
        start = position
    return pieces, text[start:]
