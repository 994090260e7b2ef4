"""Copies of a facility's waiting lanes that catch up with Redis by what changed, not by a full read.

The live hub rebuilds a facility's board snapshot after every burst of events, and the status pages
need each waiting token's place in its line. Reading every lane whole for that made a rebuild cost
grow with the lines: at the morning rush, thousands of refs read, parsed and mapped several times a
second per worker, and a worker's memory following the longest line it had read.

The scripts count every change of a lane (`lane_count` in ``lua/_lib.lua``): removals at its head (a
call), appends at its tail (a new token) and anything else (a skip back into the line, a cancel, an
expiry out of order, an undo). ``lua/lanes.lua`` answers a copy with the refs it lacks: while nothing
but head removals and tail appends happened, only the new tail; otherwise the whole lane. A lane
copy numbers its refs as they arrive, so a ref's place is found without a scan however the line has
moved. The copies are kept as arrays of numbers rather than of ref strings: a worker holds a copy of
every waiting token of the facilities it serves boards or status pages for.
"""

from __future__ import annotations

import logging
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from token_service.queue import keys

log = logging.getLogger(__name__)

LANES = ("p", "n")  # priority, then normal: the order a counter's waiting tokens are counted in
FULL_EVERY_S = 60.0  # a copy is read whole at least this often, whatever the counters say


@cache
def _source() -> str:
    return (resources.files("token_service.queue") / "lua" / "lanes.lua").read_text()


class _Run:
    """The refs of one lane that share a prefix (``OPD1.20261122``) and a number width, in lane order:
    their numbers and their running numbers in the lane, as two arrays (8 bytes a ref each, against
    ~140 for a ref string in a deque and a dict). Tokens join a lane in the order they are issued, so
    a run's numbers rise and a ref is found by bisection; a ref whose number does not rise (a token
    skipped back into the line, or put back by an undo) is kept in the copy's `LaneCopy.odd` instead."""

    __slots__ = ("numbers", "places", "start")

    def __init__(self) -> None:
        self.numbers = array("q")
        self.places = array("q")
        self.start = 0  # entries before it have left the lane

    def place(self, number: int) -> int | None:
        i = bisect_left(self.numbers, number, self.start)
        return self.places[i] if i < len(self.numbers) and self.numbers[i] == number else None

    def drop_before(self, place: int) -> None:
        start = bisect_left(self.places, place, self.start)
        if _worth_trimming(start, len(self.places)):
            del self.numbers[:start], self.places[:start]
            start = 0
        self.start = start


def _worth_trimming(gone: int, length: int) -> bool:
    """Whether an array whose first `gone` entries have left the lane should let them go: now and then,
    not on every call (each trim moves what stays)."""
    return gone > 4096 and gone * 2 > length


def _split(ref: str) -> tuple[str, int, int]:
    """(prefix, width, number) of a ref ``OPD1.20261122.00042``: ('OPD1.20261122', 5, 42); a ref of
    another shape is a prefix of its own with width 0."""
    head, dot, digits = ref.rpartition(".")
    if dot and digits.isdigit() and digits.isascii():
        return head, len(digits), int(digits)
    return ref, 0, 0


class LaneCopy:
    """One lane's refs in calling order, each with a running number (its place): a ref's place in the
    line is its running number less that of the first ref. Kept compact: the lane's order as one array
    of (run, number) pairs, the runs as arrays (`_Run`), and a dict only for the refs that fit no run."""

    __slots__ = ("counts", "first", "odd", "odd_at", "order", "order_start", "run_of", "runs")

    ODD = -1  # an `order` entry whose ref is in `odd_at`

    def __init__(self, refs: Iterable[str], counts: tuple[int, int, int]) -> None:
        self.runs: list[tuple[str, int, _Run]] = []  # (prefix, width, run)
        self.run_of: dict[tuple[str, int], int] = {}
        self.order = array("q")  # the lane from `order_start` on: run << 32 | number, or ODD
        self.order_start = 0
        self.odd: dict[str, int] = {}  # ref -> place, for the refs that did not fit their run's order
        self.odd_at: dict[int, str] = {}  # the same, place -> ref
        self.first = 0
        self.counts = counts  # the lane's (h, t, e) this copy reflects
        self._append(refs)

    def __len__(self) -> int:
        return len(self.order) - self.order_start

    @property
    def refs(self) -> list[str]:
        return [self._ref(i) for i in range(len(self))]

    def head(self) -> str | None:
        return self._ref(0) if len(self) else None

    def advance(self, keep: int, items: Iterable[str], counts: tuple[int, int, int]) -> None:
        """Drop all but the last `keep` refs from the head, append `items`."""
        drop = len(self) - keep
        if drop > 0:
            self.first += drop
            self.order_start += drop
            if _worth_trimming(self.order_start, len(self.order)):
                del self.order[: self.order_start]
                self.order_start = 0
            for _, _, run in self.runs:
                run.drop_before(self.first)
            for place in [p for p in self.odd_at if p < self.first]:
                del self.odd[self.odd_at.pop(place)]
        self._append(items)
        self.counts = counts

    def place(self, ref: str) -> int | None:
        """The ref's running number, or None if it is not in the lane."""
        place = self.odd.get(ref)
        if place is not None:
            return place
        prefix, width, number = _split(ref)
        i = self.run_of.get((prefix, width))
        return None if i is None else self.runs[i][2].place(number)

    def view(self) -> LaneView:
        return LaneView(self, self.first, len(self))

    def _append(self, refs: Iterable[str]) -> None:
        place = self.first + len(self)
        for ref in refs:
            prefix, width, number = _split(ref)
            i = self.run_of.get((prefix, width))
            if i is None:
                i = self.run_of[(prefix, width)] = len(self.runs)
                self.runs.append((prefix, width, _Run()))
            run = self.runs[i][2]
            if width and number < 1 << 32 and (len(run.numbers) == run.start or run.numbers[-1] < number):
                self.order.append(i << 32 | number)
                run.numbers.append(number)
                run.places.append(place)
            else:
                self.order.append(self.ODD)
                self.odd[ref] = place
                self.odd_at[place] = ref
            place += 1

    def _ref(self, index: int) -> str:
        """The ref `index` places behind the head."""
        entry = self.order[self.order_start + index]
        if entry == self.ODD:
            return self.odd_at[self.first + index]
        prefix, width, _ = self.runs[entry >> 32]
        return f"{prefix}.{entry & 0xFFFFFFFF:0{width}d}"


@dataclass(frozen=True, slots=True)
class LaneView:
    """A lane as it was when a snapshot was taken. The copy behind it moves on: a ref that joined it
    later is outside the view's range of numbers, and one that left it since has no number any more
    (no place: it is not waiting). The others keep their place as of the view."""

    copy: LaneCopy
    first: int
    length: int

    def index(self, ref: str) -> int | None:
        number = self.copy.place(ref)
        if number is None or not self.first <= number < self.first + self.length:
            return None
        return number - self.first


@dataclass(frozen=True, slots=True)
class Lanes:
    """A facility's lanes at one moment: per counter, its priority and normal lane."""

    by_counter: dict[str, tuple[LaneView, LaneView]]

    def waiting(self, counter: str) -> int:
        views = self.by_counter.get(counter)
        return sum(v.length for v in views) if views else 0

    def position(self, counter: str, token_id: str, normal: bool) -> int | None:
        """How many waiting tokens of `counter` are ahead of the token: the whole priority lane is ahead
        of a normal token."""
        views = self.by_counter.get(counter)
        if views is None:
            return None
        prio, plain = views
        if not normal:
            return prio.index(keys.token_ref(token_id))
        found = plain.index(keys.token_ref(token_id))
        return None if found is None else prio.length + found


class LaneMirror:
    """One facility's lane copies in this process, brought up to date by `sync`."""

    def __init__(self, redis: Redis, hip_id: str) -> None:
        self.hip_id = hip_id
        self.script: AsyncScript = redis.register_script(_source())  # no round trip: loaded on first use
        self.copies: dict[tuple[str, str], LaneCopy] = {}
        self._full_at = 0.0
        # What the syncs cost: refs read, lanes read whole and lanes caught up (tests, the benchmark).
        self.refs_read = 0
        self.full_reads = 0
        self.caught_up = 0

    async def sync(self, counters: Sequence[str], desks: Sequence[str]) -> tuple[list[str], Lanes]:
        """The desks' current token ids ('' for none) and the counters' lanes, as of one moment."""
        now = time.monotonic()
        whole = now - self._full_at >= FULL_EVERY_S
        if whole:
            self._full_at = now
        currents, lanes = await self._read(counters, desks, whole)
        if not self._apply(counters, lanes):
            log.warning("lane copies of %s did not match Redis; reading them whole", self.hip_id)
            currents, lanes = await self._read(counters, desks, True)
            if not self._apply(counters, lanes):
                raise RuntimeError(f"lanes of {self.hip_id} changed shape while read whole")
        by_counter = {c: (self.copies[(c, "p")].view(), self.copies[(c, "n")].view()) for c in counters}
        return currents, Lanes(by_counter)

    async def _read(
        self, counters: Sequence[str], desks: Sequence[str], whole: bool
    ) -> tuple[list[str], Any]:
        lane_keys: list[str] = []
        args: list[str | int] = []
        for c in counters:
            for lane in LANES:
                lane_keys.append(keys.lane_key(self.hip_id, c, lane))
                copy = None if whole else self.copies.get((c, lane))
                h, t, e = copy.counts if copy is not None else (0, 0, 0)
                args += [f"{c}:{lane}", h, t, e, len(copy) if copy is not None else -1]
        desk_keys = [keys.desk_key(self.hip_id, d) for d in desks]
        currents, lanes = await self.script(
            keys=[keys.lane_counts(self.hip_id), *lane_keys, *desk_keys], args=[len(lane_keys), *args]
        )
        return [_text(x) for x in currents], lanes

    def _apply(self, counters: Sequence[str], lanes: Any) -> bool:
        """Apply the script's answer; False when a copy does not come out as the lane is."""
        ok = True
        pairs = [(c, lane) for c in counters for lane in LANES]
        for (c, lane), (h, t, e, keep, length, head, items) in zip(pairs, lanes, strict=True):
            refs = map(_text, items)  # decoded one at a time: no second list of the lane
            counts = (int(h), int(t), int(e))
            self.refs_read += len(items)
            copy = self.copies.get((c, lane))
            if int(keep) < 0 or copy is None:
                self.full_reads += 1
                copy = self.copies[(c, lane)] = LaneCopy(refs, counts)
            else:
                self.caught_up += 1
                copy.advance(int(keep), refs, counts)
            if len(copy) != int(length) or (len(copy) and copy.head() != _text(head)):
                del self.copies[(c, lane)]
                ok = False
        return ok


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
