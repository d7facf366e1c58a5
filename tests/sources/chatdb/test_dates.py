"""sources/chatdb/dates.py: Apple timestamps and the ISO 8601 strings the artifacts carry."""

from __future__ import annotations

import datetime as dt
import random

from imessage_finetune.sources.chatdb.dates import unix_to_iso


def test_iso_strings_are_exactly_datetimes_isoformat() -> None:
    """The fast formatter gives what datetime gives, to the second, across the whole range
    of years (before 1970 too) and for fractional seconds (truncated)."""
    rng = random.Random(20260101)
    values = [0, -1, 86_399, 86_400, -86_401, 951_782_400, 1_700_000_000.9, -0.5, 253_402_300_799]
    values += [rng.uniform(-62_135_596_800, 253_402_300_799) for _ in range(20_000)]
    for value in values:
        assert unix_to_iso(value) == dt.datetime.fromtimestamp(int(value), tz=dt.timezone.utc).isoformat()
