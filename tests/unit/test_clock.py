"""The facility's local day, as every token issue asks for it (answered from the last day looked up)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from token_service import clock
from token_service.clock import local_day


def fresh(now_ms: int, timezone: str) -> tuple[date, int]:
    """The day computed from nothing, as it was before answers were kept."""
    tz = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
    return local.date(), int(midnight.timestamp() * 1000)


@pytest.mark.parametrize(
    "timezone",
    # India and Nepal (the service's users), zones whose clocks change at midnight or at 01:00, and
    # one that dropped a whole day.
    ["Asia/Kolkata", "Asia/Kathmandu", "America/Havana", "America/Santiago", "Europe/London",
     "Pacific/Apia"],
)  # fmt: skip
def test_kept_days_answer_as_a_fresh_lookup(timezone: str) -> None:
    clock._DAYS.clear()
    start = int(datetime(2011, 1, 1, tzinfo=UTC).timestamp() * 1000)
    # Every 37 minutes for two years: the walk crosses every midnight and every clock change.
    for now_ms in range(start, start + 2 * 366 * 86_400_000, 37 * 60_000):
        assert local_day(now_ms, timezone) == fresh(now_ms, timezone), (timezone, now_ms)


def test_a_day_ends_at_the_next_local_midnight_and_the_next_begins() -> None:
    clock._DAYS.clear()
    ist = ZoneInfo("Asia/Kolkata")
    midnight_ms = int(datetime(2026, 11, 23, tzinfo=ist).timestamp() * 1000)
    assert local_day(midnight_ms - 1, "Asia/Kolkata") == (date(2026, 11, 22), midnight_ms)
    assert local_day(midnight_ms, "Asia/Kolkata") == (date(2026, 11, 23), midnight_ms + 86_400_000)
    # Going back in time (a test clock) is answered too, not from the newer day kept.
    assert local_day(midnight_ms - 1, "Asia/Kolkata") == (date(2026, 11, 22), midnight_ms)
