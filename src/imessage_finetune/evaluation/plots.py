"""Inline SVG charts for the report: no library, no script, nothing fetched.

Each function returns an `<svg>` element as a string, sized by its viewBox so it scales with
the page, with its numbers written on it (a chart should be readable without hovering).
Every text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

COLOURS = {
    "real": "#222222",
    "you": "#2e7d32",
    "base": "#9e9e9e",
    "tuned": "#1565c0",
    "others": "#c62828",
    "validation": "#ef6c00",
}
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" {FONT} font-size="13">{body}</svg>'
    )


def _nice_max(value: float) -> float:
    """A round number at or above `value`, for an axis."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


@dataclass(frozen=True)
class Series:
    """A line of a line chart: its name, colour and (x, y) points."""

    name: str
    colour: str
    points: Sequence[tuple[float, float]]
    dots: bool = False


def line_chart(series: Sequence[Series], *, x_label: str, y_label: str, title: str) -> str:
    """Lines over a shared x axis (the training loss by step)."""
    width, height, left, right, top, bottom = 720, 300, 60, 20, 30, 45
    points = [p for s in series for p in s.points]
    if not points:
        return _svg(width, 60, f'<text x="10" y="35">{escape(title)}: nothing to show</text>', title)
    x_max = max(p[0] for p in points) or 1
    x_min = min(p[0] for p in points)
    # The axis spans the values (a loss curve pressed against zero shows nothing), padded.
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    pad = max((high - low) * 0.15, 0.05)
    y_min, y_max = max(0.0, math.floor((low - pad) * 10) / 10), math.ceil((high + pad) * 10) / 10
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(v: float) -> float:
        return left + (v - x_min) / max(x_max - x_min, 1e-9) * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v - y_min) / max(y_max - y_min, 1e-9) * plot_h

    body = [f'<text x="{left}" y="18" font-weight="600">{escape(title)}</text>']
    for i in range(5):
        value = y_min + (y_max - y_min) * i / 4
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e0e0e0"/>'
        )
        body.append(
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" fill="#555">{_fmt(value, 2)}</text>'
        )
    for value in sorted({x_min, x_max, round((x_min + x_max) / 2)}):
        body.append(
            f'<text x="{x(value):.1f}" y="{height - bottom + 18}" text-anchor="middle" fill="#555">{int(value)}</text>'
        )
    body.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle" fill="#555">{escape(x_label)}</text>'
    )
    body.append(
        f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" fill="#555" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">{escape(y_label)}</text>'
    )
    for index, s in enumerate(series):
        path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in s.points)
        if len(s.points) > 1 and not s.dots:
            body.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        for px, py in s.points if s.dots or len(s.points) == 1 else ():
            body.append(f'<circle cx="{x(px):.1f}" cy="{y(py):.1f}" r="3.5" fill="{s.colour}"/>')
        legend_x = width - right - 170
        body.append(f'<rect x="{legend_x}" y="{top + 4 + 18 * index}" width="12" height="12" fill="{s.colour}"/>')
        body.append(f'<text x="{legend_x + 18}" y="{top + 14 + 18 * index}">{escape(s.name)}</text>')
    return _svg(width, height, "".join(body), title)


def bars(values: Sequence[tuple[str, float, str]], *, unit: str, title: str, note: str = "") -> str:
    """Horizontal bars with their values written at their ends (held-out loss)."""
    width, row, left, top = 720, 34, 170, 30
    height = top + row * len(values) + (28 if note else 10)
    scale = _nice_max(max((v for _, v, _ in values), default=1))
    span = width - left - 90
    body = [f'<text x="0" y="18" font-weight="600">{escape(title)}</text>']
    for index, (label, value, colour) in enumerate(values):
        y = top + index * row
        length = max(1.0, value / scale * span)
        body.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end">{escape(label)}</text>')
        body.append(f'<rect x="{left}" y="{y + 4}" width="{length:.1f}" height="20" fill="{colour}" rx="2"/>')
        body.append(f'<text x="{left + length + 6:.1f}" y="{y + 19}">{_fmt(value)} {escape(unit)}</text>')
    if note:
        body.append(f'<text x="{left}" y="{height - 8}" fill="#555">{escape(note)}</text>')
    return _svg(width, height, "".join(body), title)


def ruler(marks: Sequence[tuple[str, float, str]], *, title: str, left_label: str, right_label: str) -> str:
    """Distances as marks on one axis, with the calibration as a shaded band: where the tuned
    model's replies sit between "as close as you to yourself" and "as far as other people"."""
    width, left, right = 720, 30, 30
    axis_y = 40 + 18 * len(marks)
    height = axis_y + 60
    top = _nice_max(max(v for _, v, _ in marks) * 1.1)
    span = width - left - right

    def x(value: float) -> float:
        return left + value / top * span

    body = [f'<text x="0" y="18" font-weight="600">{escape(title)}</text>']
    named = {label: value for label, value, _ in marks}
    calibration = [v for k, v in named.items() if k.startswith(("you", "other"))]
    if len(calibration) == 2:
        lo, hi = sorted(calibration)
        body.append(f'<rect x="{x(lo):.1f}" y="{axis_y - 14}" width="{x(hi) - x(lo):.1f}" height="28" fill="#e8f5e9"/>')
    body.append(
        f'<line x1="{left}" x2="{width - right}" y1="{axis_y}" y2="{axis_y}" stroke="#555" stroke-width="1.5"/>'
    )
    for i in range(5):
        value = top * i / 4
        body.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{axis_y - 4}" y2="{axis_y + 4}" stroke="#555"/>'
        )
        body.append(
            f'<text x="{x(value):.1f}" y="{axis_y + 22}" text-anchor="middle" fill="#777" font-size="11">{_fmt(value, 2)}</text>'
        )
    ordered = sorted(marks, key=lambda m: m[1])
    for index, (label, value, colour) in enumerate(ordered):
        # One row of text per mark, the closest to the left on top, with a leader line down.
        text_y = 36 + 18 * index
        body.append(
            f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{text_y + 4}" y2="{axis_y}" stroke="{colour}" stroke-dasharray="2 2"/>'
        )
        body.append(
            f'<circle cx="{x(value):.1f}" cy="{axis_y}" r="7" fill="{colour}" stroke="white" stroke-width="1.5"/>'
        )
        anchor = "start" if x(value) < width / 2 else "end"
        offset = 6 if anchor == "start" else -6
        body.append(
            f'<text x="{x(value) + offset:.1f}" y="{text_y}" text-anchor="{anchor}" fill="{colour}" font-weight="600">'
            f"{escape(label)} {_fmt(value)}</text>"
        )
    body.append(f'<text x="{left}" y="{height - 6}" fill="#555">← {escape(left_label)}</text>')
    body.append(
        f'<text x="{width - right}" y="{height - 6}" text-anchor="end" fill="#555">{escape(right_label)} →</text>'
    )
    return _svg(width, height, "".join(body), title)


def grouped_bars(
    rows: Sequence[tuple[str, Sequence[tuple[str, float, str]]]], *, title: str, unit: str, maximum: float
) -> str:
    """One group of bars per feature, one bar per author (the style features side by side)."""
    width, left, top = 720, 220, 50
    per = max(len(values) for _, values in rows) if rows else 1
    bar_h, gap = 11, 10
    group_h = per * bar_h + gap
    height = top + group_h * len(rows) + 10
    span = width - left - 70
    body = [f'<text x="0" y="18" font-weight="600">{escape(title)}</text>']
    if rows:
        for index, (name, _, colour) in enumerate(rows[0][1]):
            body.append(f'<rect x="{left + index * 110}" y="28" width="12" height="12" fill="{colour}"/>')
            body.append(f'<text x="{left + index * 110 + 18}" y="38">{escape(name)}</text>')
    for index, (label, values) in enumerate(rows):
        y = top + index * group_h
        body.append(f'<text x="{left - 8}" y="{y + per * bar_h / 2 + 4:.1f}" text-anchor="end">{escape(label)}</text>')
        for position, (_, value, colour) in enumerate(values):
            length = max(0.5, value / maximum * span) if maximum else 0.5
            top_y = y + position * bar_h
            body.append(f'<rect x="{left}" y="{top_y}" width="{length:.1f}" height="{bar_h - 2}" fill="{colour}"/>')
            body.append(
                f'<text x="{left + length + 4:.1f}" y="{top_y + 9}" font-size="10" fill="#444">{_fmt(value, 0)}{escape(unit)}</text>'
            )
    return _svg(width, height, "".join(body), title)
