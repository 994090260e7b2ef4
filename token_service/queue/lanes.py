"""Copies of a facility's waiting lanes that catch up with Redis by what changed, not by a full read.

The live hub rebuilds a facility's board snapshot after every burst of events, and the status pages
need each waiting token's place in its line. Reading every lane whole for that made a rebuild cost
grow with the lines: at the morning rush, thousands of refs read, parsed and mapped several times a
second per worker, and a worker's memory following the longest line it had read.

The scripts count every change of a lane (`lane_count` in ``lua/_lib.lua``): removals at its head (a
call), appends at its tail (a new token) and anything else (a skip back into the line, a cancel, an
expiry out of order, an undo). ``lua/lanes.lua`` answers a copy with the refs it lacks: while nothing
but head removals and tail appends happened, only the new tail; otherwise the whole lane. A lane
copy numbers its refs as they arrive, so a ref's place is found in O(1) however the line has moved.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
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


class LaneCopy:
    """One lane's refs in calling order, each with a running number: a ref's place is its number less
    the number of the first ref."""

    __slots__ = ("counts", "first", "number", "refs")

    def __init__(self, refs: Sequence[str], counts: tuple[int, int, int]) -> None:
        self.refs: deque[str] = deque(refs)
        self.number: dict[str, int] = {ref: i for i, ref in enumerate(refs)}
        self.first = 0
        self.counts = counts  # the lane's (h, t, e) this copy reflects

    def advance(self, keep: int, items: Sequence[str], counts: tuple[int, int, int]) -> None:
        """Drop all but the last `keep` refs from the head, append `items`."""
        drop = len(self.refs) - keep
        for _ in range(drop):
            self.number.pop(self.refs.popleft(), None)
        self.first += drop
        base = self.first + len(self.refs)
        for i, ref in enumerate(items):
            self.number[ref] = base + i
        self.refs.extend(items)
        self.counts = counts

    def view(self) -> LaneView:
        return LaneView(self, self.first, len(self.refs))


@dataclass(frozen=True, slots=True)
class LaneView:
    """A lane as it was when a snapshot was taken. The copy behind it moves on: a ref that joined it
    later is outside the view's range of numbers, and one that left it since has no number any more
    (no place: it is not waiting). The others keep their place as of the view."""

    copy: LaneCopy
    first: int
    length: int

    def index(self, ref: str) -> int | None:
        number = self.copy.number.get(ref)
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
                h, t, e = copy.counts if copy else (0, 0, 0)
                args += [f"{c}:{lane}", h, t, e, len(copy.refs) if copy else -1]
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
            refs = [_text(x) for x in items]
            counts = (int(h), int(t), int(e))
            self.refs_read += len(refs)
            copy = self.copies.get((c, lane))
            if int(keep) < 0 or copy is None:
                self.full_reads += 1
                copy = self.copies[(c, lane)] = LaneCopy(refs, counts)
            else:
                self.caught_up += 1
                copy.advance(int(keep), refs, counts)
            if len(copy.refs) != int(length) or (copy.refs and copy.refs[0] != _text(head)):
                del self.copies[(c, lane)]
                ok = False
        return ok


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
