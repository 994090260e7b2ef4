"""A fresh PostgreSQL database per test (created and dropped), or the SQLite default."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.servers import postgres_url


@contextmanager
def fresh_database(backend: str) -> Iterator[str]:
    """Yield a database URL: '' (SQLite in the data dir) or a new PostgreSQL database."""
    if backend == "sqlite":
        yield ""
        return
    base = postgres_url()
    assert base is not None
    import psycopg

    admin = base.replace("postgresql+psycopg://", "postgresql://")
    name = "opd_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
