"""JSON encoding of artifacts: deterministic, UTF-8, fast (orjson) for tens of megabytes."""

from __future__ import annotations

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
