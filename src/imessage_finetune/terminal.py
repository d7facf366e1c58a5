"""Text from outside (a model's reply, names from chat.db) made safe and aligned for a terminal.

Control characters are shown, never sent: an ESC from a model's reply or a contact's name
would otherwise start a terminal escape sequence (colours, cursor moves, a changed window
title), a carriage return would overwrite the line, and bidirectional overrides would show
text in another order than it is stored. Each is replaced by its escape, as Python writes it
(`\\x1b`, `\\x07`, `\\u202e`): visible, plain ASCII, and saying exactly what was there.

Widths are terminal columns, not code points: an emoji or a CJK character takes two, a
combining accent none. They come from `wcwidth` (Unicode's East Asian Width and emoji tables,
zero-width joiner sequences and variation selectors, kept current with each Unicode release),
which the standard library has no equivalent of.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from wcwidth import wcswidth

# C0 controls, DEL and C1 controls (Unicode category Cc), line and paragraph separators, and
# the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_PATTERNS: dict[str, re.Pattern[str]] = {}


def _pattern(keep: str) -> re.Pattern[str]:
    if keep not in _PATTERNS:
        kept = "".join(re.escape(c) for c in keep)
        _PATTERNS[keep] = re.compile(f"(?![{kept}])[{_UNSAFE}]" if kept else f"[{_UNSAFE}]")
    return _PATTERNS[keep]


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep: str = "") -> str:
    """`text` with each control character (except those in `keep`) shown as its escape."""
    return _pattern(keep).sub(_escape, text)


def count_unsafe(text: str, *, keep: str = "") -> int:
    """How many characters of `text` `printable` would replace."""
    return len(_pattern(keep).findall(text))


def display_width(text: str) -> int:
    """Terminal columns `text` takes (control characters must be made printable first)."""
    width = wcswidth(text)
    return width if width >= 0 else len(text)  # -1 only for a control character


def table_lines(rows: Sequence[Sequence[str]], *, gap: str = "  ") -> list[str]:
    """Rows as lines of columns aligned by display width; cells are made printable."""
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        gap.join(cell + " " * (width - display_width(cell)) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
