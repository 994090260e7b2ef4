"""TokenQueue: the live OPD queue on Redis. Every decision is one atomic Lua script; this is the typed face."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from token_service.clock import Clock, local_day
from token_service.errors import Conflict, NotFound
from token_service.queue import keys, record
from token_service.queue.scripts import Scripts
from token_service.queue.status import Priority, Source, Status


@dataclass(frozen=True)
class FacilityRules:
    """The per-facility knobs the scripts need, cached by the service from SQL."""

    timezone: str = "Asia/Kolkata"
    validity_s: int = 1800
    priority_ratio: int = 2
    ageing_s: int = 2700


_STATUS: dict[str, Status] = dict(Status._value2member_map_)
_PRIORITY: dict[str, Priority] = dict(Priority._value2member_map_)
_SOURCE: dict[str, Source] = dict(Source._value2member_map_)


@dataclass(frozen=True)
class Token:
    """One patient's place in one counter's line, as Redis holds it."""

    id: str
    public_id: str
    hip_id: str
    counter: str
    origin_counter: str
    local_date: str
    number: int
    label: str
    status: Status
    priority: Priority
    source: Source
    abha_address: str | None
    request_id: str | None
    order: float
    issued_ms: int
    called_ms: int | None
    served_ms: int | None
    finished_ms: int | None
    expires_ms: int
    day_end_ms: int
    desk: str | None
    skips: int
    recalls: int
    version: int

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> Token:
        def opt_int(name: str) -> int | None:
            value = f.get(name) or ""
            return int(value) if value != "" else None

        return cls(
            id=f["id"],
            public_id=f["pub"],
            hip_id=f["hip"],
            counter=f["c"],
            origin_counter=f["oc"],
            local_date=f["d"],
            number=int(f["n"]),
            label=f["lbl"],
            status=_STATUS.get(f["s"]) or Status(f["s"]),  # the map lookup is ~10× an Enum call
            priority=_PRIORITY.get(f["p"]) or Priority(f["p"]),
            source=_SOURCE.get(f["src"]) or Source(f["src"]),
            abha_address=f.get("abha") or None,
            request_id=f.get("req") or None,
            order=float(f["ord"]),
            issued_ms=int(f["iss"]),
            called_ms=opt_int("cal"),
            served_ms=opt_int("srv"),
            finished_ms=opt_int("fin"),
            expires_ms=int(f["xp"]),
            day_end_ms=int(f["eod"]),
            desk=f.get("desk") or None,
            skips=int(f["sk"]),
            recalls=int(f["rc"]),
            version=int(f["v"]),
        )

    def to_fields(self) -> dict[str, str]:
        """The Redis hash form (used by rebuild)."""

        def s(v: int | None) -> str:
            return "" if v is None else str(v)

        order = str(int(self.order)) if self.order == int(self.order) else repr(self.order)
        return {
            "id": self.id, "pub": self.public_id, "hip": self.hip_id, "c": self.counter,
            "oc": self.origin_counter, "d": self.local_date, "n": str(self.number), "lbl": self.label,
            "s": self.status.value, "p": self.priority.value, "src": self.source.value,
            "abha": self.abha_address or "", "req": self.request_id or "", "ord": order,
            "iss": str(self.issued_ms), "cal": s(self.called_ms), "srv": s(self.served_ms),
            "fin": s(self.finished_ms), "xp": str(self.expires_ms), "eod": str(self.day_end_ms),
            "desk": self.desk or "", "sk": str(self.skips), "rc": str(self.recalls), "v": str(self.version),
        }  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IssueResult:
    token: Token
    outcome: str  # created | duplicate | rescan

    @property
    def created(self) -> bool:
        return self.outcome == "created"


@dataclass(frozen=True)
class CallResult:
    called: Token | None
    completed: Token | None


def _raise_for(result: dict[str, Any], token_id: str) -> None:
    err = result.get("err")
    if err is None:
        return
    if err == "not_found":
        raise NotFound(f"token {token_id} not found")
    if err == "nothing_to_undo":
        raise Conflict("nothing to undo at this desk")
    if err == "same_counter":
        raise Conflict("the token is already at that counter")
    raise Conflict(f"token {token_id} cannot do that while {result.get('status', 'in this state')}")


class TokenQueue:
    """Operations on the live queue. Time comes from the injected clock."""

    def __init__(self, redis: Redis, scripts: Scripts, clock: Clock) -> None:
        self.redis = redis
        self.scripts = scripts
        self.clock = clock

    async def issue(
        self,
        hip_id: str,
        counter: str,
        rules: FacilityRules,
        *,
        prefix: str = "",
        priority: Priority = Priority.NORMAL,
        source: Source = Source.WALK_IN,
        request_id: str | None = None,
        abha_address: str | None = None,
    ) -> IssueResult:
        now = self.clock.now_ms()
        day, day_end = local_day(now, rules.timezone)
        res = await self.scripts.run(
            "issue", hip_id, now, hip_id, counter, day.strftime("%Y%m%d"), day_end, rules.validity_s * 1000,
            request_id or "", (abha_address or "").lower(), priority.value, source.value,
            secrets.token_urlsafe(9), prefix,
        )  # fmt: skip
        return IssueResult(Token.from_fields(res["token"]), res["outcome"])

    async def call_next(
        self, hip_id: str, desk: str, counters: Sequence[str], rules: FacilityRules
    ) -> CallResult:
        res = await self.scripts.run(
            "call_next", hip_id, self.clock.now_ms(), desk, rules.priority_ratio, rules.ageing_s * 1000,
            *counters,
        )  # fmt: skip
        return CallResult(
            Token.from_fields(res["called"]) if res.get("called") else None,
            Token.from_fields(res["completed"]) if res.get("completed") else None,
        )

    async def _token_op(self, op: str, token_id: str, *args: str | int) -> Token:
        hip_id = keys.hip_of_token_id(token_id)
        res = await self.scripts.run(op, hip_id, self.clock.now_ms(), token_id, *args)
        _raise_for(res, token_id)
        return Token.from_fields(res["token"])

    async def recall(self, token_id: str, desk: str = "") -> Token:
        return await self._token_op("recall", token_id, desk)

    async def skip(self, token_id: str, desk: str, places: int = 3) -> Token:
        return await self._token_op("skip", token_id, desk, places)

    async def complete(self, token_id: str, desk: str = "") -> Token:
        return await self._token_op("finish", token_id, desk, Status.COMPLETED.value)

    async def cancel(self, token_id: str, desk: str = "") -> Token:
        return await self._token_op("finish", token_id, desk, Status.CANCELLED.value)

    async def transfer(self, token_id: str, target_counter: str, desk: str = "") -> Token:
        return await self._token_op("transfer", token_id, target_counter, desk)

    async def undo(self, hip_id: str, desk: str) -> list[Token]:
        res = await self.scripts.run("undo", hip_id, self.clock.now_ms(), desk)
        _raise_for(res, f"at desk {desk}")
        return [Token.from_fields(t) for t in res["tokens"]]

    async def sweep(self, hip_id: str, limit: int = 1000) -> int:
        res = await self.scripts.run("sweep", hip_id, self.clock.now_ms(), limit)
        return int(res["expired"])

    async def restore(self, token: Token) -> None:
        import orjson

        payload = orjson.dumps(token.to_fields()).decode()
        await self.scripts.run("restore", token.hip_id, self.clock.now_ms(), payload)

    # ---- reads (no script needed: each is a consistent single command or a pipeline of them)

    async def get(self, token_id: str) -> Token:
        tokens = await self._load([token_id])
        if not tokens:
            raise NotFound(f"token {token_id} not found")
        return tokens[0]

    async def _load(self, token_ids: Sequence[str]) -> list[Token]:
        """The tokens of these ids that exist, in order: one HMGET per bucket of 64 numbers."""
        wanted: dict[str, list[tuple[int, str, str]]] = {}
        for i, tid in enumerate(token_ids):
            where = keys.token_location(tid)
            if where is not None:
                wanted.setdefault(where[0], []).append((i, tid, where[1]))
        if not wanted:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for bucket, items in wanted.items():
            pipe.hmget(bucket, ["e", *(field for _, _, field in items)])
        found: list[tuple[int, Token]] = []
        for items, values in zip(wanted.values(), await pipe.execute(), strict=True):
            day_end = values[0]
            for (i, tid, _), raw in zip(items, values[1:], strict=True):
                if raw is not None:
                    found.append((i, Token.from_fields(record.unpack(tid, raw, int(day_end)))))
        return [t for _, t in sorted(found, key=lambda it: it[0])]

    async def get_many(self, hip_id: str, token_ids: Iterable[str]) -> list[Token]:
        return await self._load([t for t in token_ids if keys.hip_of_token_id(t) == hip_id])

    async def waiting(self, hip_id: str, counter: str) -> list[Token]:
        """Waiting tokens of a counter: priority lane first, then normal lane, each in calling order."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(keys.lane_key(hip_id, counter, "p"), 0, -1)
        pipe.lrange(keys.lane_key(hip_id, counter, "n"), 0, -1)
        prio, normal = await pipe.execute()
        return await self._load([f"{hip_id}.{ref}" for ref in (*prio, *normal)])

    async def called(self, hip_id: str, counter: str) -> list[Token]:
        ids: list[str] = await self.redis.zrange(keys.called_zset(hip_id, counter), 0, -1)  # type: ignore[assignment]
        return await self.get_many(hip_id, ids)

    async def waiting_counts(self, hip_id: str, counters: Sequence[str]) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for c in counters:
            pipe.llen(keys.lane_key(hip_id, c, "p"))
            pipe.llen(keys.lane_key(hip_id, c, "n"))
        counts = await pipe.execute()
        return {c: int(counts[2 * i]) + int(counts[2 * i + 1]) for i, c in enumerate(counters)}

    async def desk_current(self, hip_id: str, desk: str) -> str | None:
        cur: str | None = await self.redis.hget(keys.desk_key(hip_id, desk), "cur")  # type: ignore[assignment]
        return cur or None
