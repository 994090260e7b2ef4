"""The migrations build exactly the schema the models describe (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import token_service.models  # noqa: F401  (the tables)
from tests.support.app import make_settings
from token_service.config import Settings
from token_service.records import db


def test_migrations_match_the_models(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, "redis://unused", database_url)
    db.migrate(settings)
    engine = db.sync_engine(settings)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
            indexes = {  # beside the keys and unique constraints
                t: {i["name"]: i for i in inspect(conn).get_indexes(t) if not i["unique"]}
                for t in ("on_share", "token")
            }
    finally:
        engine.dispose()
    assert diffs == []
    # The share path's tables carry only the indexes some query reads; on-shares by status only while
    # pending (a row's move to sent adds no entry there).
    assert set(indexes["on_share"]) == {"ix_on_share_pending"}
    pending = indexes["on_share"]["ix_on_share_pending"]
    options = pending.get("dialect_options", {})
    where = options.get("postgresql_where", options.get("sqlite_where"))
    assert "pending" in str(where), pending
    assert set(indexes["token"]) == {"ix_token_day"}


def test_migration_0003_goes_both_ways(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, "redis://unused", database_url)
    db.migrate(settings)
    command.downgrade(db.alembic_config(settings), "0002")

    def names() -> set[str]:
        engine = db.sync_engine(settings)
        try:
            with engine.connect() as conn:
                found = inspect(conn)
                return {
                    i["name"] for t in ("on_share", "token") for i in found.get_indexes(t) if not i["unique"]
                }
        finally:
            engine.dispose()

    assert names() == {"ix_on_share_status", "ix_on_share_hip_id", "ix_token_request_id", "ix_token_day"}
    db.migrate(settings)
    assert names() == {"ix_on_share_pending", "ix_token_day"}


def test_statements_on_pending_on_shares_use_their_index(tmp_path: Path, postgres_database_url: str) -> None:
    """The outcome update and the sweep read the pending on-shares through their partial index, also in
    a prepared statement's generic plan (which the driver's prepared statements get after a few runs):
    a bound 'pending' hid the index from it, and every batch's outcome update read the whole table."""
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    from token_service.abdm import outbox
    from token_service.records.writer import _pg_statement

    settings = make_settings(tmp_path, "redis://unused", postgres_database_url)
    db.migrate(settings)
    dialect = PGDialect_psycopg()
    outcome = _pg_statement(outbox._OUTCOME_JSON, dialect, ("rows",))
    assert outcome is not None and not outcome.constants  # nothing left to bind but the rows
    sweep = str(outbox._SWEEP.compile(dialect=dialect))
    statements = {
        "outcome": (
            outcome.sql.replace("%(rows)s", "$1"),
            '\'[{"oid": 1, "new_status": "sent", "inc": 1}]\'',
        ),
        "sweep": (sweep.replace("%(limit)s", "$1"), "2000"),
    }
    fill = (
        "INSERT INTO on_share (hip_id, request_id, version, payload, status, attempts, created_at, "
        "deadline_at) SELECT 'H', 'r' || g, 'v3', '{}', CASE WHEN mod(g, 50) = 0 THEN 'pending' ELSE 'sent' "
        "END, 0, now(), now() FROM generate_series(1, 20000) g"
    )
    for name, plan in generic_plans(settings, fill, statements).items():
        assert "ix_on_share_pending" in plan and "Seq Scan on on_share" not in plan, (name, plan)


def generic_plans(settings: Settings, fill: str, statements: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Each statement's generic plan (what a prepared statement gets after a few runs), on tables that
    `fill` filled; `statements` maps a name to the SQL (parameters as $1...) and its arguments."""
    engine = db.sync_engine(settings)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(fill)
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            plans = {}
            for name, (sql, args) in statements.items():
                conn.exec_driver_sql(f"PREPARE {name} AS {sql}")
                plans[name] = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN EXECUTE {name}({args})"))
            return plans
    finally:
        engine.dispose()


def test_the_token_upsert_probes_stored_rows_by_key(tmp_path: Path, postgres_database_url: str) -> None:
    """The token upsert looks up each row's stored version by primary key (an index probe per row), in
    a prepared statement's generic plan too; a join over the whole table would cost more than the row
    locks the lookup saves."""
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    from token_service.records.tokens import _statement
    from token_service.records.writer import _pg_statement

    settings = make_settings(tmp_path, "redis://unused", postgres_database_url)
    db.migrate(settings)
    upsert = _pg_statement(_statement("json", "token"), PGDialect_psycopg(), ("rows",))
    assert upsert is not None and not upsert.constants
    fill = (
        "INSERT INTO token (id, public_id, hip_id, counter, origin_counter, local_date, number, "
        'label, status, priority, source, skips, recalls, "order", version, issued_at, '
        "expires_at, day_end_at, updated_at) SELECT 'T' || g, 'p' || g, 'H', 'OPD1', 'OPD1', "
        "current_date, g, 'A' || g, 'waiting', 'normal', 'scan_share', 0, 0, g, 1, now(), now(), "
        "now(), now() FROM generate_series(1, 20000) g; ANALYZE token"
    )
    plan = generic_plans(settings, fill, {"upsert": (upsert.sql.replace("%(rows)s", "$1"), "'[]'")})["upsert"]
    assert "Index Scan using token_pkey on token stored" in plan, plan
    assert "Seq Scan on token" not in plan and "Hash" not in plan, plan
