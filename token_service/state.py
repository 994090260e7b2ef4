"""The typed application state the lifespan builds and every router reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from token_service.clock import Clock
from token_service.config import Settings
from token_service.directory import Directory
from token_service.embedded import EmbeddedRedis
from token_service.operations import TokenService
from token_service.queue.scripts import Scripts
from token_service.queue.service import TokenQueue
from token_service.records.recorder import Recorder
from token_service.records.writer import SqlWriter
from token_service.redis_guard import RedisBreaker


@dataclass
class AppState:
    settings: Settings
    clock: Clock
    redis: Redis
    scripts: Scripts
    queue: TokenQueue
    engine: AsyncEngine
    writer: SqlWriter
    recorder: Recorder
    directory: Directory
    tokens: TokenService
    embedded: EmbeddedRedis | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # Opens when Redis stops answering in time; commands then fail at once (token_service.redis_guard).
    breaker: RedisBreaker | None = None
