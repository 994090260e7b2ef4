"""Token statuses, priorities and sources, with the terminal set spelled out."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    WAITING = "waiting"
    CALLED = "called"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"
    EXPIRED = "expired"


ACTIVE = frozenset({Status.WAITING, Status.CALLED})
TERMINAL = frozenset({Status.COMPLETED, Status.CANCELLED, Status.NO_SHOW, Status.EXPIRED})


class Priority(StrEnum):
    NORMAL = "normal"
    SENIOR = "senior"
    PWD = "pwd"
    PREGNANT = "pregnant"
    EMERGENCY = "emergency"


# Emergency jumps every line; the other priorities share the priority lane, served in a ratio with
# the normal lane so that neither lane starves.
PRIORITY_LANE = frozenset({Priority.SENIOR, Priority.PWD, Priority.PREGNANT, Priority.EMERGENCY})


class Source(StrEnum):
    SCAN_SHARE = "scan_share"
    WALK_IN = "walk_in"
    ABHA_CARD = "abha_card"


SENIOR_AGE = 60


def auto_priority(requested: Priority, year_of_birth: int | None, current_year: int) -> Priority:
    """Senior citizens (60+ by ABHA birth year) get the senior lane unless staff chose a stronger one."""
    if requested is Priority.NORMAL and year_of_birth and current_year - year_of_birth >= SENIOR_AGE:
        return Priority.SENIOR
    return requested
