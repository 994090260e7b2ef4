"""Load the Lua scripts once (the shared prelude prepended) and call them by SHA through typed wrappers."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from token_service.queue import keys

OPERATIONS = ("issue", "call_next", "recall", "skip", "finish", "transfer", "undo", "sweep", "restore")


def _source(name: str) -> str:
    lua = resources.files("token_service.queue") / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass
class Scripts:
    """Registered scripts. ``redis-py`` retries EVALSHA with EVAL on NOSCRIPT (e.g. after a restart)."""

    scripts: dict[str, AsyncScript]

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls({name: redis.register_script(_source(name)) for name in OPERATIONS})

    async def run(self, name: str, hip_id: str, now_ms: int, *args: str | int | float) -> dict[str, Any]:
        keys_ = [keys.events_stream(hip_id), keys.expiry_index(hip_id)]
        argv = [keys.facility_prefix(hip_id), now_ms, *args]
        raw = await self.scripts[name](keys=keys_, args=argv)
        result: dict[str, Any] = orjson.loads(raw)
        return result
