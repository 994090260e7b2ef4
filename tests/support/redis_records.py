"""Read token records straight from Redis (sync), decoded as the service decodes them."""

from __future__ import annotations

import redis as sync_redis

from token_service.queue import keys, record


def read_token(r: sync_redis.Redis, token_id: str) -> dict[str, str] | None:
    """The token's fields, or None when Redis has no record of it (``r`` decodes responses)."""
    where = keys.token_location(token_id)
    if where is None:
        return None
    raw, day_end = r.hmget(where[0], [where[1], "e"])
    return None if raw is None else record.unpack(token_id, raw, int(day_end))


def all_tokens(r: sync_redis.Redis, hip_id: str) -> dict[str, dict[str, str]]:
    """Every token record of the facility, by id."""
    out: dict[str, dict[str, str]] = {}
    prefix = keys.facility_prefix(hip_id) + "k:"
    for key in r.scan_iter(match=prefix + "*", count=1000):
        counter, local_date, _ = key[len(prefix) :].split(":")
        fields = r.hgetall(key)
        day_end = int(fields.pop("e"))
        for number, raw in fields.items():
            tid = f"{hip_id}.{counter}.{local_date}.{int(number):05d}"
            out[tid] = record.unpack(tid, raw, day_end)
    return out
