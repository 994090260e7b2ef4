"""Facility configuration (facilities, counters, desks) read from SQL and cached briefly per process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from token_service.errors import NotFound
from token_service.models import Counter, Desk, Facility
from token_service.queue.service import FacilityRules
from token_service.tasks import SingleFlight

# Admin edits reach every worker within this many seconds; the hot path never waits on SQL for config.
CACHE_TTL_S = 3.0


@dataclass(frozen=True)
class FacilityConfig:
    facility: Facility
    counters: dict[str, Counter]
    desks: dict[str, Desk]
    rules: FacilityRules

    @property
    def hip_id(self) -> str:
        return self.facility.hip_id

    def counter(self, code: str) -> Counter:
        c = self.counters.get(code)
        if c is None:
            raise NotFound(f"counter {code} not found at facility {self.hip_id}")
        return c

    def desk(self, code: str) -> Desk:
        d = self.desks.get(code)
        if d is None:
            raise NotFound(f"desk {code} not found at facility {self.hip_id}")
        return d

    def desk_counters(self, desk: Desk) -> list[str]:
        """A desk with no counters listed serves every active counter of the facility."""
        codes = desk.counters or [c.code for c in self.counters.values()]
        return [c for c in codes if c in self.counters and self.counters[c].active]


@dataclass
class Directory:
    engine: AsyncEngine
    default_validity_s: int
    _cache: dict[str, tuple[float, FacilityConfig]] = field(default_factory=dict)
    _hips: tuple[float, list[str]] = (0.0, [])
    _loading: SingleFlight[FacilityConfig] = field(default_factory=SingleFlight)
    _epoch: int = 0  # bumped by invalidate(): a load that started before it must not be cached

    def invalidate(self, hip_id: str | None = None) -> None:
        self._epoch += 1
        if hip_id is None:
            self._cache.clear()
        else:
            self._cache.pop(hip_id, None)
        self._hips = (0.0, [])

    async def hip_ids(self) -> list[str]:
        at, hips = self._hips
        if time.monotonic() - at < CACHE_TTL_S:
            return hips
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(Facility.hip_id))  # type: ignore[call-overload]
            hips = [r[0] for r in rows]
        self._hips = (time.monotonic(), hips)
        return hips

    async def get(self, hip_id: str) -> FacilityConfig:
        hit = self._cache.get(hip_id)
        if hit and time.monotonic() - hit[0] < CACHE_TTL_S:
            return hit[1]
        # One load per facility at a time: when the entry expires under a thousand open status pages,
        # they share one SQL read instead of each starting its own.
        return await self._loading.run(hip_id, lambda: self._load(hip_id))

    async def _load(self, hip_id: str) -> FacilityConfig:
        epoch = self._epoch
        async with self.engine.connect() as conn:
            frow = (await conn.execute(select(Facility).where(Facility.hip_id == hip_id))).first()  # type: ignore[arg-type]
            if frow is None:
                raise NotFound(f"facility {hip_id} not found")
            facility = Facility.model_validate(frow._mapping)
            crows = await conn.execute(select(Counter).where(Counter.hip_id == hip_id))  # type: ignore[arg-type]
            counters = {r.code: Counter.model_validate(r._mapping) for r in crows}
            drows = await conn.execute(select(Desk).where(Desk.hip_id == hip_id))  # type: ignore[arg-type]
            desks = {r.code: Desk.model_validate(r._mapping) for r in drows}
        rules = FacilityRules(
            timezone=facility.timezone,
            validity_s=facility.validity_seconds or self.default_validity_s,
            priority_ratio=facility.priority_ratio,
            ageing_s=facility.ageing_seconds,
        )
        cfg = FacilityConfig(facility, counters, desks, rules)
        if epoch == self._epoch:
            self._cache[hip_id] = (time.monotonic(), cfg)
        return cfg
