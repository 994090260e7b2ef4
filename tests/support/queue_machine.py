"""The real Lua queue and the plain-Python reference model driven by the same hypothesis rules: after every
step they must agree on every token, lane, desk and expiry entry."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import hypothesis.strategies as st
import redis as sync_redis
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from redis.asyncio import Redis

from tests.support.model import Model
from token_service.clock import FakeClock, local_day
from token_service.errors import Conflict, NotFound
from token_service.queue import keys, record
from token_service.queue.lanes import LaneMirror
from token_service.queue.scripts import Scripts
from token_service.queue.service import FacilityRules, TokenQueue
from token_service.queue.status import Priority, Source

HIP = "IN0710000123"
COUNTERS = ["C1", "C2", "C3"]
DESKS = {"D1": ["C1", "C2"], "D2": ["C2", "C3"], "D3": ["C3"]}
RULES = FacilityRules(timezone="Asia/Kolkata", validity_s=1800, priority_ratio=2, ageing_s=2700)
# 22:30 IST: the first day rolls over within a few clock advances.
START_MS = int(datetime(2026, 11, 22, 22, 30, tzinfo=ZoneInfo("Asia/Kolkata")).timestamp() * 1000)
PRIORITIES = [p.value for p in Priority]
STATS: Counter[str] = Counter()


def make_machine(url: str) -> type[RuleBasedStateMachine]:
    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.sync = sync_redis.Redis.from_url(url, decode_responses=True)
            self.sync.flushall()
            self.clock = FakeClock(START_MS)
            self.redis = Redis.from_url(url, decode_responses=True)
            self.queue = TokenQueue(self.redis, Scripts.register(self.redis), self.clock)
            self.model = Model(HIP, RULES.validity_s * 1000, RULES.priority_ratio, RULES.ageing_s * 1000,
                               now=START_MS)  # fmt: skip

        def run(self, coro):  # type: ignore[no-untyped-def]
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            self.run(self.redis.aclose())
            self.loop.close()
            self.sync.close()

        def pick(self, data: st.DataObject) -> str:
            """Mostly a live token (where the interesting transitions are), sometimes any, rarely unknown."""
            live = sorted(i for i, t in self.model.tokens.items() if t["s"] in ("waiting", "called"))
            called = sorted(i for i, t in self.model.tokens.items() if t["s"] == "called")
            roll = data.draw(st.integers(0, 19))
            if roll < 2:
                return f"{HIP}.C1.20990101.00001"
            if roll < 9 and called:
                return data.draw(st.sampled_from(called))
            if roll < 16 and live:
                return data.draw(st.sampled_from(live))
            return data.draw(st.sampled_from(sorted(self.model.tokens)))

        @initialize()
        def start(self) -> None:
            assert self.model.now == self.clock.now_ms()

        @rule(counter=st.sampled_from(COUNTERS), req=st.one_of(st.none(), st.sampled_from(["r1", "r2", "r3", "r4"])),
              abha=st.one_of(st.none(), st.sampled_from(["a@abdm", "b@abdm"])),
              prio=st.sampled_from(PRIORITIES), src=st.sampled_from([s.value for s in Source]),
              count=st.integers(1, 4))  # fmt: skip
        def issue(
            self, counter: str, req: str | None, abha: str | None, prio: str, src: str, count: int
        ) -> None:
            for i in range(count):
                # Later tokens of a burst are normal, without ids: a realistic mix at one counter.
                if i:
                    req, abha, prio = None, None, "normal"
                self._issue_one(counter, req, abha, prio, src)

        def _issue_one(self, counter: str, req: str | None, abha: str | None, prio: str, src: str) -> None:
            res = self.run(self.queue.issue(HIP, counter, RULES, prefix="A", priority=Priority(prio),
                                            source=Source(src), request_id=req, abha_address=abha))  # fmt: skip
            day, eod = local_day(self.clock.now_ms(), RULES.timezone)
            tid, outcome = self.model.issue(counter, day.strftime("%Y%m%d"), eod, req or "", abha or "", prio,
                                            src, res.token.public_id, "A")  # fmt: skip
            assert (res.token.id, res.outcome) == (tid, outcome)

        @rule(desk=st.sampled_from(sorted(DESKS)))
        def call_next(self, desk: str) -> None:
            res = self.run(self.queue.call_next(HIP, desk, DESKS[desk], RULES))
            called, done = self.model.call_next(desk, DESKS[desk])
            assert (res.called.id if res.called else None) == called
            STATS[f"call_next {'called ' + (res.called.priority.value if res.called else 'nobody')}"] += 1
            assert (res.completed.id if res.completed else None) == done

        def _expect(self, outcome: str, coro) -> None:  # type: ignore[no-untyped-def]
            try:
                self.run(coro)
                got = "ok"
            except NotFound:
                got = "not_found"
            except Conflict as exc:
                got = {"the token is already at that counter": "same_counter",
                       "nothing to undo at this desk": "nothing_to_undo"}.get(exc.detail, "conflict")  # fmt: skip
            assert got == outcome
            STATS[f"{coro.__qualname__.split('.')[-1]} {got}"] += 1

        @precondition(lambda self: self.model.tokens)
        @rule(data=st.data(), desk=st.sampled_from(["", *sorted(DESKS)]))
        def recall(self, data: st.DataObject, desk: str) -> None:
            tid = self.pick(data)
            self._expect(self.model.recall(tid, desk), self.queue.recall(tid, desk))

        @precondition(lambda self: self.model.tokens)
        @rule(data=st.data(), desk=st.sampled_from(sorted(DESKS)), places=st.integers(1, 4))
        def skip(self, data: st.DataObject, desk: str, places: int) -> None:
            tid = self.pick(data)
            self._expect(self.model.skip(tid, desk, places), self.queue.skip(tid, desk, places))

        @precondition(lambda self: self.model.tokens)
        @rule(data=st.data(), desk=st.sampled_from(["", *sorted(DESKS)]), cancel=st.booleans())
        def finish(self, data: st.DataObject, desk: str, cancel: bool) -> None:
            tid = self.pick(data)
            if cancel:
                self._expect(self.model.finish(tid, desk, "cancelled"), self.queue.cancel(tid, desk))
            else:
                self._expect(self.model.finish(tid, desk, "completed"), self.queue.complete(tid, desk))

        @precondition(lambda self: self.model.tokens)
        @rule(data=st.data(), to=st.sampled_from(COUNTERS), desk=st.sampled_from(["", *sorted(DESKS)]))
        def transfer(self, data: st.DataObject, to: str, desk: str) -> None:
            tid = self.pick(data)
            self._expect(self.model.transfer(tid, to, desk), self.queue.transfer(tid, to, desk))

        @rule(desk=st.sampled_from(sorted(DESKS)))
        def undo(self, desk: str) -> None:
            self._expect(self.model.undo(desk), self.queue.undo(HIP, desk))

        @rule(seconds=st.sampled_from([5, 30, 60, 120, 300, 600, 900, 1200, 2000, 2800, 7200, 26 * 3600]))
        def advance(self, seconds: int) -> None:
            self.clock.advance(seconds)
            self.model.now = self.clock.now_ms()

        @rule()
        def sweep(self) -> None:
            before = sum(t["s"] == "expired" for t in self.model.tokens.values())
            self.run(self.queue.sweep(HIP, 100))
            self.model.sweep(100)
            if sum(t["s"] == "expired" for t in self.model.tokens.values()) > before:
                STATS["sweep expired"] += 1

        @invariant()
        def same_state(self) -> None:
            m = self.model
            r = self.sync
            # Records keep neither the ABHA address nor the REQUEST-ID (the issue's event carries them).
            for tid, fields in m.tokens.items():
                bucket, field = keys.token_location(tid)  # type: ignore[misc]
                raw, day_end = r.hmget(bucket, [field, "e"])
                assert record.unpack(tid, raw, int(day_end)) == {**fields, "abha": "", "req": ""}, tid
            for (counter, lane), members in m.lanes.items():
                real = r.lrange(keys.lane_key(HIP, counter, lane), 0, -1)
                assert real == [keys.token_ref(i) for i, _ in m.ordered(members)], (counter, lane)
            for counter, members in m.called.items():
                real = r.zrange(keys.called_zset(HIP, counter), 0, -1, withscores=True)
                assert real == [(i, s) for i, s in m.ordered(members)], counter
            # Every waiting token has an entry in the expiry wheel at the minute of its deadline.
            for tid, xp in m.exp.items():
                minute = int(xp) // 60_000
                entry = f"{keys.token_ref(tid)}@{int(xp) - minute * 60_000}"
                assert entry in r.lrange(keys.wheel_key(HIP, minute), 0, -1), tid
                assert r.zscore(keys.expiry_index(HIP), str(minute)) == minute, tid
            for name, desk in m.desks.items():
                real = r.hgetall(keys.desk_key(HIP, name))
                assert real.get("cur", "") == desk.cur, name
                assert real.get("streak", "0") == desk.streak, name
            self._lane_copies_follow()
            # Invariant 1: per (counter, day) numbers are unique and gapless from 1.
            by_day: dict[tuple[str, str], list[int]] = {}
            for t in m.tokens.values():
                by_day.setdefault((t["oc"], t["d"]), []).append(int(t["n"]))
            for nums in by_day.values():
                assert sorted(nums) == list(range(1, len(nums) + 1))

        def _lane_copies_follow(self) -> None:
            """Copies of the lanes (as the live hub keeps them) caught up from the scripts' change counters
            hold what the lanes hold, and give every waiting token its place; one copy follows every step,
            one every third step (several changes at once)."""
            if not hasattr(self, "mirrors"):
                self.mirrors = [LaneMirror(self.redis, HIP), LaneMirror(self.redis, HIP)]
                self.steps = 0
            self.steps += 1
            m = self.model
            for mirror in self.mirrors[: 1 if self.steps % 3 else 2]:
                whole, caught_up = mirror.full_reads, mirror.caught_up
                currents, lanes = self.run(mirror.sync(COUNTERS, sorted(DESKS)))
                STATS["lanes read whole"] += mirror.full_reads - whole
                STATS["lanes caught up"] += mirror.caught_up - caught_up
                assert currents == [m.desks[d].cur if d in m.desks else "" for d in sorted(DESKS)]
                for counter in COUNTERS:
                    prio = [i for i, _ in m.ordered(m.lanes.get((counter, "p"), {}))]
                    normal = [i for i, _ in m.ordered(m.lanes.get((counter, "n"), {}))]
                    for lane, ids in (("p", prio), ("n", normal)):
                        assert list(mirror.copies[(counter, lane)].refs) == [keys.token_ref(i) for i in ids]
                    assert lanes.waiting(counter) == len(prio) + len(normal)
                    for place, tid in enumerate([*prio, *normal]):
                        normal_lane = m.tokens[tid]["p"] == "normal"
                        assert lanes.position(counter, tid, normal_lane) == place, (tid, counter)
                    for tid, t in m.tokens.items():  # not waiting at this counter: no place in its line
                        if t["s"] != "waiting" or t["c"] != counter:
                            assert lanes.position(counter, tid, t["p"] == "normal") is None

    return QueueMachine
