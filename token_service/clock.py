"""Injectable time: the queue never reads the wall clock itself, so rollover and expiry are testable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass
class FakeClock:
    """A clock tests move by hand."""

    ms: int

    def now_ms(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


# Per timezone, the last day looked up: (first ms, end ms, local date). Every token issue asks for the
# facility's day; the answer changes at midnight only.
_DAYS: dict[str, tuple[int, int, date]] = {}


def local_day(now_ms: int, timezone: str) -> tuple[date, int]:
    """The facility's local date at `now_ms` and the ms instant its day ends (next local midnight)."""
    known = _DAYS.get(timezone)
    if known is not None and known[0] <= now_ms < known[1]:
        return known[2], known[1]
    tz = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    start_ms = int(datetime.combine(local.date(), datetime.min.time(), tz).timestamp() * 1000)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
    end_ms = int(midnight.timestamp() * 1000)
    # Kept only when the day's bounds hold this instant (a zone whose clocks skip midnight may not).
    if start_ms <= now_ms < end_ms:
        _DAYS[timezone] = (start_ms, end_ms, local.date())
    return local.date(), end_ms


def from_ms(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)
