"""JSON encoding of artifacts: deterministic, UTF-8, fast (orjson) for tens of megabytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

_PRETTY = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SORT_KEYS


def dump_json(value: Any) -> bytes:
    """Indented, key-sorted JSON with a final newline, for small human-readable artifacts."""
    return orjson.dumps(value, option=_PRETTY)


def dump_compact(value: Any) -> bytes:
    """Compact JSON in insertion order, for the large streamed artifacts."""
    return orjson.dumps(value)


def load_json(data: bytes | str) -> Any:
    """Parse JSON text."""
    return orjson.loads(data)


# The large artifacts (sessions.json, merged.json) are one JSON object written one array item
# per line, so they can be produced and consumed one chat at a time:
#   {"format": ..., "<key>": [
#   {item},
#   {item}
#   ], "<trailer key>": {...}}
class StreamWriter:
    """Writes a JSON object whose array `key` is streamed one item per line."""

    def __init__(self, handle: Any, envelope: dict[str, Any], key: str) -> None:
        self.handle = handle
        self.count = 0
        handle.write(orjson.dumps(envelope)[:-1] + f',"{key}":['.encode())

    def add(self, item: Any) -> None:
        """Append one item."""
        self.handle.write((b",\n" if self.count else b"\n") + orjson.dumps(item))
        self.count += 1

    def close(self, trailer_key: str, trailer: Any) -> None:
        """End the array and the object with a final member."""
        self.handle.write(f'\n],"{trailer_key}":'.encode() + orjson.dumps(trailer) + b"}\n")


def read_stream(path: Any, key: str) -> tuple[dict[str, Any], Iterator[Any]]:
    """The envelope of a streamed JSON file and an iterator over its items, read line by line.

    A file in any other layout (still valid JSON) is read whole instead.
    """
    with open(path, "rb") as handle:
        first = handle.readline().rstrip(b"\n")
    marker = f',"{key}":['.encode()
    if not first.endswith(marker):
        document = orjson.loads(Path(path).read_bytes())
        return document, iter(document.pop(key))

    def items() -> Iterator[Any]:
        with open(path, "rb") as handle:
            handle.readline()
            for line in handle:
                if line.startswith(b"]"):
                    return
                yield orjson.loads(line.rstrip(b"\n").rstrip(b","))

    return orjson.loads(first[: -len(marker)] + b"}"), items()


def read_trailer(path: Any, trailer_key: str) -> Any:
    """The final member of a streamed JSON file, read from its end."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - (1 << 20)))
        tail = handle.read()
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    prefix = f'],"{trailer_key}":'.encode()
    if last.startswith(prefix):
        return orjson.loads(last[len(prefix) : -1])
    return orjson.loads(Path(path).read_bytes())[trailer_key]
