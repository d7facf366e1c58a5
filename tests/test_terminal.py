"""Text from outside made safe and aligned for a terminal (the CLI's tests show it in use)."""

from __future__ import annotations

from imessage_finetune.terminal import count_unsafe, display_width, printable, table_lines


def test_control_characters_become_escapes_and_kept_ones_stay() -> None:
    """C0, DEL, C1, line separators and bidi controls are escaped; `keep` keeps what it names."""
    text = "a\x00\x07\x1b[1m\x7f\x85\x9b\u2028\u202e\u2066b\n\t"
    assert printable(text) == "a\\x00\\x07\\x1b[1m\\x7f\\x85\\x9b\\u2028\\u202e\\u2066b\\x0a\\x09"
    assert printable(text, keep="\n\t") == "a\\x00\\x07\\x1b[1m\\x7f\\x85\\x9b\\u2028\\u202e\\u2066b\n\t"
    assert count_unsafe(text, keep="\n\t") == 9 and count_unsafe(text) == 11


def test_ordinary_text_is_untouched() -> None:
    """Letters of every script, emoji sequences, combining marks, U+FFFD and joiners pass as they are."""
    text = "Zoe\u0301 東京 👨\u200d👩\u200d👧 ❤\ufe0f 🇫🇷 \ufffd مرحبا"
    assert printable(text, keep="\n\t") == text and count_unsafe(text) == 0


def test_display_width_counts_terminal_columns() -> None:
    """Two columns for wide characters and emoji (ZWJ families and flags as one), none for marks."""
    assert [display_width(s) for s in ["abc", "東京", "🐢", "e\u0301", "👨\u200d👩\u200d👧", "🇫🇷", ""]] == [3, 4, 2, 1, 2, 2, 0]


def test_table_lines_pad_by_display_width() -> None:
    """Every column starts at the same terminal column; trailing spaces are dropped."""
    lines = table_lines([("A", "B", "C"), ("東京", "x", "1"), ("🐢e\u0301", "yy", "22"), ("\x1b", "z", "3")])
    assert lines == ["A     B   C", "東京  x   1", "🐢e\u0301   yy  22", "\\x1b  z   3"]
