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


def local_day(now_ms: int, timezone: str) -> tuple[date, int]:
    """The facility's local date at `now_ms` and the ms instant its day ends (next local midnight)."""
    tz = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
    return local.date(), int(midnight.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC)
