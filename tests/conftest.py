"""Shared fixtures: a private redis-server for the test session, flushed around every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.servers import RedisProc

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProc]:
    proc = RedisProc().start()
    yield proc
    proc.cleanup()


@pytest.fixture
def redis_url(redis_proc: RedisProc) -> Iterator[str]:
    client = redis.Redis.from_url(redis_proc.url)
    client.flushall()
    yield redis_proc.url
    client.flushall()
    client.close()


def _fresh_database(backend: str) -> Iterator[str]:
    from tests.support.pg import fresh_database
    from tests.support.servers import postgres_url

    if backend == "postgres" and postgres_url() is None:
        pytest.skip("no PostgreSQL reachable (set OPD_TEST_POSTGRES_URL)")
    with fresh_database(backend) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """'' for SQLite in the data dir, or a fresh PostgreSQL database (skipped when none is reachable)."""
    yield from _fresh_database(request.param)


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database, for what only PostgreSQL has (skipped when none is reachable)."""
    yield from _fresh_database("postgres")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("OPD_TEST", "1")
