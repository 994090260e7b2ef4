"""Database engines and migrations: SQLite (WAL) by default, PostgreSQL in production."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from token_service.config import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers (reports, pages) run beside the writer; busy_timeout makes several worker
    # processes queue for the write lock instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _prepare(settings: Settings) -> None:
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns (patient snapshots, on-share payloads, audit details) through orjson: several per share.
_JSON: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": orjson.loads}


def sync_engine(settings: Settings) -> Engine:
    _prepare(settings)
    engine = create_engine(settings.sqlalchemy_url, pool_pre_ping=True, **_JSON)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def async_engine(settings: Settings) -> AsyncEngine:
    _prepare(settings)
    url = settings.async_sqlalchemy_url
    kwargs: dict[str, Any] = {"pool_pre_ping": True, **_JSON}
    if not url.startswith("sqlite"):
        kwargs.update(pool_size=10, max_overflow=10, pool_timeout=5)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config(settings: Settings) -> Config:
    # Alembic (with Mako and Pygments) costs ~12 MB; it is loaded where migrations run, not in workers.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", settings.sqlalchemy_url.replace("%", "%%"))
    return cfg


def migrate(settings: Settings) -> None:
    """Bring the schema to the newest revision (idempotent; run before workers start)."""
    from alembic import command

    _prepare(settings)
    command.upgrade(alembic_config(settings), "head")
