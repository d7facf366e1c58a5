"""Apple's timestamps: seconds (macOS <= 10.12) or nanoseconds (10.13+) since 2001-01-01 UTC.

Everything is converted in UTC, so the output never depends on the machine's time zone.
"""

from __future__ import annotations

import datetime as dt
import functools

APPLE_EPOCH_UNIX = 978_307_200
# Seconds stay below 1e10 until the year 2317; nanoseconds pass 1e11 after 100 seconds.
NANOSECONDS_THRESHOLD = 100_000_000_000


def apple_to_unix(value: int | float | None) -> float | None:
    """Unix seconds for an Apple timestamp; None for NULL, 0 ("never") or a negative value."""
    if value is None or value <= 0:
        return None
    seconds = value / 1e9 if value > NANOSECONDS_THRESHOLD else float(value)
    return seconds + APPLE_EPOCH_UNIX


def unix_to_apple_ns(unix_seconds: float) -> int:
    """The nanosecond Apple timestamp macOS 10.13+ stores for a Unix time."""
    return round((unix_seconds - APPLE_EPOCH_UNIX) * 1e9)


_UNIX_EPOCH = dt.date(1970, 1, 1)
_SECONDS_PER_DAY = 86_400


@functools.lru_cache(maxsize=1 << 14)
def _iso_day(day: int) -> str:
    """`YYYY-MM-DD` of a day counted from 1970-01-01."""
    return (_UNIX_EPOCH + dt.timedelta(days=day)).isoformat()


def unix_to_iso(unix_seconds: float) -> str:
    """ISO 8601 in UTC with an explicit offset, to the second: `2025-02-06T21:25:24+00:00`.

    What `datetime.fromtimestamp(int(s), timezone.utc).isoformat()` gives, at a fraction of
    its cost: a history holds many messages a day, and the day's date is formatted once.
    """
    day, seconds = divmod(int(unix_seconds), _SECONDS_PER_DAY)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_iso_day(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}+00:00"
