"""The SQL writer's batched statements on SQLite and PostgreSQL (where they bypass SQLAlchemy's executor).

One batch carries several callers' rows for several operations; each caller gets back the results of its
own rows, committed together. The PostgreSQL path hands compiled SQL and parameter lists straight to
psycopg, so these tests read the rows back and compare them with what was submitted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.app import make_settings, running_writer
from token_service import retention
from token_service.abdm.outbox import ATTEMPT_INSERT, ON_SHARE, ONSHARE_OUTCOME, ONSHARE_UPSERT
from token_service.errors import Unavailable
from token_service.operations import AUDIT, AUDIT_INSERT
from token_service.queue.service import Token
from token_service.queue.status import Priority, Source, Status
from token_service.records.tokens import EVENT_INSERT, TOKEN, TOKEN_UPSERT, _ms, event_row, token_rows
from token_service.records.writer import LINGER_S, SqlWriter, _pg_statement
from token_service.retention import MIN_DAYS

HIP = "IN0710000123"


# Tokens are issued now (to the second): the SQL upsert fills identity only into rows issued within the
# live queue's lifetime, by the database's clock.
T0 = int(time.time()) * 1000


def _token(n: int, *, version: int = 1, status: Status = Status.WAITING, desk: str | None = None) -> Token:
    return Token(
        id=f"{HIP}.OPD1.20261122.{n:05d}", public_id=f"pub{n}", hip_id=HIP, counter="OPD1",
        origin_counter="OPD1", local_date="20261122", number=n, label=f"A{n}", status=status,
        priority=Priority.NORMAL, source=Source.SCAN_SHARE, abha_address=f"p{n}@sbx", request_id=f"req-{n}",
        order=float(n), issued_ms=T0 + n, called_ms=None, served_ms=None, finished_ms=None,
        expires_ms=T0 + 1_800_000, day_end_ms=T0 + 50_000_000, desk=desk, skips=0, recalls=0,
        version=version,
    )  # fmt: skip


def _share_row(request_id: str, token_id: str, name: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "hip_id": HIP, "request_id": request_id, "version": "v3", "token_id": token_id,
        "payload": {"request_id": request_id, "name": name, "nested": {"n": [1, 2]}}, "status": "pending",
        "attempts": 0, "created_at": now, "deadline_at": now + timedelta(seconds=25),
    }  # fmt: skip


def test_batched_rows_round_trip(tmp_path: Path, database_url: str, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            # Three callers at once: their rows share one batch (the writer drains its queue per batch).
            patient = {"name": "रमेश कुमार", "year_of_birth": 1960}
            patient3 = {"name": "ક્ષમા પટેલ", "year_of_birth": 1990}
            a, b, c, _ = await asyncio.gather(
                writer.submit_rows([*token_rows([_token(1)], patient),
                                    (ONSHARE_UPSERT, _share_row("req-1", _token(1).id, "क्षमा"))]),
                writer.submit_rows([*token_rows([_token(2)]), (ONSHARE_UPSERT, _share_row("req-2", _token(2).id, "B"))]),
                # the same REQUEST-ID again in the same batch: one row, both callers get its id
                writer.submit_rows([(ONSHARE_UPSERT, _share_row("req-2", _token(2).id, "B again"))]),
                # a second shared profile in the batch: both written by the batch's one token upsert
                writer.submit_rows(token_rows([_token(3)], patient3)),
            )  # fmt: skip
            id1, id2, id2_again = a[-1], b[-1], c[-1]
            assert isinstance(id1, int) and isinstance(id2, int) and id1 != id2
            assert id2_again == id2
            # A re-delivery later re-arms the row (fresh payload) and answers with the same id.
            (rearmed,) = await writer.submit_rows(
                [(ONSHARE_UPSERT, _share_row("req-1", _token(1).id, "again"))]
            )
            assert rearmed == id1

            # An older version never overwrites a newer one; a newer one does.
            called = _token(2, version=2, status=Status.CALLED, desk="D1")
            await writer.submit_rows([*token_rows([called]), (TOKEN_UPSERT, token_rows([_token(2)])[0][1])])
            at = datetime.now(UTC)
            await writer.submit_rows([
                (EVENT_INSERT, event_row(HIP, "1-1", "called", T0 + 100_000, "D1", called)),
                (EVENT_INSERT, event_row(HIP, "1-1", "called", T0 + 100_000, "D1", called)),  # redelivered
                (AUDIT_INSERT, {"at": at, "actor": "clerk", "action": "call_next", "hip_id": HIP, "target": called.id}),
                (ATTEMPT_INSERT, {"on_share_id": id1, "at": at, "outbound_request_id": "out-1", "status_code": 202,
                                  "ok": True, "error": None, "duration_ms": 12}),
                (ONSHARE_OUTCOME, {"oid": id1, "new_status": "sent", "inc": 1, "error": None, "sent": at}),
                (ONSHARE_OUTCOME, {"oid": id2, "new_status": "failed", "inc": 0, "error": "deadline", "sent": None}),
            ])  # fmt: skip

            async with engine.connect() as conn:
                toks = {r.number: r for r in await conn.execute(select(TOKEN).order_by(TOKEN.c.number))}
                shares = {r.request_id: r for r in await conn.execute(select(ON_SHARE))}
                events = (await conn.execute(text("SELECT count(*) FROM token_event"))).scalar_one()
                audits = (await conn.execute(select(AUDIT.c.actor, AUDIT.c.detail))).all()
                attempts = (
                    await conn.execute(text("SELECT on_share_id, ok, status_code FROM on_share_attempt"))
                ).all()
            assert toks[1].patient == patient and toks[2].patient is None and toks[3].patient == patient3
            assert toks[1].label == "A1" and _ms(toks[1].issued_at) == T0 + 1
            assert (toks[2].status, toks[2].version, toks[2].desk) == ("called", 2, "D1")
            assert set(shares) == {"req-1", "req-2"}
            assert shares["req-1"].payload == {
                "request_id": "req-1",
                "name": "again",
                "nested": {"n": [1, 2]},
            }
            assert shares["req-2"].payload["name"] == "B again"
            assert (shares["req-1"].status, shares["req-1"].attempts) == ("sent", 1)
            assert shares["req-1"].sent_at is not None
            assert (shares["req-2"].status, shares["req-2"].last_error) == ("failed", "deadline")
            assert events == 1
            assert audits == [("clerk", None)]
            assert attempts == [(id1, True, 202)]

    asyncio.run(scenario())


def test_a_later_state_written_first_gets_the_issues_identity(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """Redis's record leaves out the ABHA address and REQUEST-ID, so only the issue's state carries them.
    When another state reaches SQL first (a retried share answered before the issue's write-through
    committed, or a recorder batch that holds both), the row still ends up with both, and the older
    state changes nothing else. The shared profile, which only the share's own write carries, fills a
    row the recorder wrote first. A row the retention purge cleared is not filled in again."""
    settings = make_settings(tmp_path, redis_url, database_url)
    patient = {"name": "Sita Devi"}

    def anonymous(t: Token) -> Token:
        return dataclasses.replace(t, abha_address=None, request_id=None)

    def called(n: int) -> Token:
        return anonymous(_token(n, version=2, status=Status.CALLED, desk="D1"))

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            # The same version without, then with the identity (a duplicate share's state first).
            await writer.submit_rows(token_rows([anonymous(_token(1))], patient))
            await writer.submit_rows(token_rows([_token(1)]))
            # A later state first (its row holds the shared profile), then the issue's state.
            await writer.submit_rows(token_rows([called(2)], patient))
            await writer.submit_rows(token_rows([_token(2)]))
            # One batch holding both versions (the recorder copying the issue and the call together).
            await writer.submit_rows([*token_rows([called(3)]), *token_rows([_token(3)])])
            # The recorder's copy of a later state first, then the share's write-through with the profile.
            await writer.submit_rows(token_rows([called(4)]))
            await writer.submit_rows(token_rows([_token(4)], patient))
            # A second share's profile for the same token (a rescan) does not replace the first.
            await writer.submit_rows(token_rows([_token(4)], {"name": "someone else"}))
            async with engine.connect() as conn:
                toks = {r.number: r for r in await conn.execute(select(TOKEN))}
            for n in (1, 2, 3, 4):
                assert (toks[n].abha_address, toks[n].request_id) == (f"p{n}@sbx", f"req-{n}"), n
            assert (toks[1].status, toks[1].version) == ("waiting", 1)
            for n in (2, 3, 4):
                assert (toks[n].status, toks[n].version, toks[n].desk) == ("called", 2, "D1"), n
            assert [toks[n].patient for n in (1, 2, 3, 4)] == [patient, patient, None, patient]

            # The retention purge clears a row (only ever one issued before the live queue's lifetime);
            # a late copy of its issue event, even with the profile, does not refill it.
            async with engine.begin() as conn:
                await conn.execute(
                    TOKEN.update().values(issued_at=datetime.now(UTC) - timedelta(days=MIN_DAYS + 1))
                )
            assert (await retention.purge(engine, MIN_DAYS)).tokens == 4
            await writer.submit_rows(token_rows([_token(2)], patient))
            async with engine.connect() as conn:
                row = (await conn.execute(select(TOKEN).where(TOKEN.c.number == 2))).one()
            assert (row.abha_address, row.request_id, row.status, row.version) == (None, None, "called", 2)
            assert row.patient is None

    asyncio.run(scenario())


def test_a_failing_unit_fails_alone(tmp_path: Path, database_url: str, redis_url: str) -> None:
    """A batch is one transaction (on PostgreSQL one pipeline, COMMIT included): a unit the database
    refuses rolls its batch back, and its neighbours are written again one by one."""
    settings = make_settings(tmp_path, redis_url, database_url)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            # An attempt for an on-share that does not exist: the database refuses it.
            orphan = {"on_share_id": 999_999, "at": datetime.now(UTC), "outbound_request_id": "out-x",
                      "status_code": 202, "ok": True, "error": None, "duration_ms": 1}  # fmt: skip
            good_a, bad, good_b = await asyncio.gather(
                writer.submit_rows(token_rows([_token(1)])),
                writer.submit_rows([*token_rows([_token(2)]), (ATTEMPT_INSERT, orphan)]),
                writer.submit_rows(token_rows([_token(3)])),
                return_exceptions=True,
            )  # fmt: skip
            assert good_a == [None] and good_b == [None]
            assert isinstance(bad, Unavailable)
            # The writer goes on, and the refused unit left nothing behind (its token row included).
            await writer.submit_rows(token_rows([_token(4)]))
            async with engine.connect() as conn:
                numbers = [r.number for r in await conn.execute(select(TOKEN).order_by(TOKEN.c.number))]
            assert numbers == [1, 3, 4]

    asyncio.run(scenario())


def test_a_busy_writer_gathers_units_an_idle_one_sends_at_once(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """While units arrive close together the writer waits LINGER_S for the units behind the one it
    took, and they share its commit. After a pause a unit goes out at once, without waiting."""
    settings = make_settings(tmp_path, redis_url, database_url)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            batches: list[int] = []
            write = writer._write_held

            async def counted(batch: Any) -> list[list[Any]]:
                batches.append(len(batch))
                return await write(batch)

            writer._write_held = counted  # type: ignore[method-assign]
            await writer.submit_rows(token_rows([_token(1)]))
            assert (batches, writer.lingered) == ([1], 0)  # a first unit, after a pause: sent at once
            burst = [writer.submit_rows(token_rows([_token(n)])) for n in range(2, 102)]
            assert await asyncio.gather(*burst) == [[None]] * 100
            assert (batches, writer.lingered) == ([1, 100], 1)  # the writer now counts as busy
            # Under a steady load the next unit comes a moment after the last. Here the 100-unit commit
            # above comes in between, and on a slow or loaded box it takes long enough to lift the
            # average over LINGER_S by itself: the next unit is taken as arriving right after the burst.
            writer._arrivals.gap_s, writer._arrivals._last = 0.0, time.monotonic()
            second = asyncio.create_task(writer.submit_rows(token_rows([_token(102)])))
            for _ in range(1000):  # until the writer has taken this unit and waits for more
                if writer.lingered == 2:
                    break
                await asyncio.sleep(0)
            third = asyncio.create_task(writer.submit_rows(token_rows([_token(103)])))
            assert await asyncio.gather(second, third) == [[None], [None]]
            assert (batches, writer.lingered) == ([1, 100, 2], 2)
            await asyncio.sleep(LINGER_S * 50)
            await writer.submit_rows(token_rows([_token(104)]))
            assert (batches, writer.lingered) == ([1, 100, 2, 1], 2)
            async with engine.connect() as conn:
                numbers = [r.number for r in await conn.execute(select(TOKEN).order_by(TOKEN.c.number))]
            assert numbers == list(range(1, 105))

    asyncio.run(scenario())


def test_batches_share_one_connection_until_it_breaks(
    tmp_path: Path, postgres_database_url: str, redis_url: str
) -> None:
    """The batch loop keeps its connection between batches (no pool checkout and pre-ping per batch);
    when the server ends that connection, the batch in flight is written again on a new one and its
    caller never sees the failure."""
    settings = make_settings(tmp_path, redis_url, postgres_database_url)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            pids: list[int] = []
            checkouts: list[object] = []
            event.listen(engine.sync_engine, "checkout", lambda *args: checkouts.append(args[0]))

            async def backend(conn: Any) -> None:
                pids.append((await conn.get_raw_connection()).driver_connection.info.backend_pid)

            for n in (1, 2, 3):
                await writer.submit(backend)
                await writer.submit_rows(token_rows([_token(n)]))
            assert len(set(pids)) == 1, pids
            assert len(checkouts) == 1  # six batches, one connection
            async with engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
            assert await writer.submit_rows(token_rows([_token(4)])) == [None]
            await writer.submit(backend)
            await writer.submit(backend)
            assert pids[-1] == pids[-2] != pids[0]
            assert len(checkouts) == 3  # and then this test's own, and the writer's replacement
            async with engine.connect() as conn:
                numbers = [r.number for r in await conn.execute(select(TOKEN).order_by(TOKEN.c.number))]
            assert numbers == [1, 2, 3, 4]

    asyncio.run(scenario())


@pytest.mark.parametrize("op", [TOKEN_UPSERT, EVENT_INSERT, AUDIT_INSERT, ONSHARE_UPSERT, ATTEMPT_INSERT,
                                ONSHARE_OUTCOME], ids=lambda op: op.name)  # fmt: skip
def test_hot_statements_take_the_psycopg_path(op: Any) -> None:
    """Every hot statement compiles to plain SQL for psycopg: a default SQLAlchemy would have to compute
    (or an expanding parameter) would silently send it back through the slow path."""
    from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg

    from token_service.abdm import outbox
    from token_service.records import tokens

    dialect = PGDialectAsync_psycopg()
    t = _token(1)
    stmt, row = {
        "token upsert": (tokens._statement("json", "token"), {"rows": [token_rows([t])[0][1]]}),
        "event insert": (tokens._statement("json", "event"), {"rows": [event_row(HIP, "1-1", "called", 0, "D1", t)]}),
        "audit insert": (AUDIT.insert(), {"at": datetime.now(UTC), "actor": "a", "action": "x", "hip_id": HIP,
                                           "target": "t", "detail": None}),
        "on-share upsert": (outbox._upsert_statement("json"), {"rows": [_share_row("r", t.id, "n")]}),
        "on-share attempt": (outbox._ATTEMPT_JSON, {"rows": [{"on_share_id": 1, "at": datetime.now(UTC),
                                                              "outbound_request_id": "o", "status_code": 202,
                                                              "ok": True, "error": None, "duration_ms": 1}]}),
        "on-share outcome": (outbox._OUTCOME_JSON, {"rows": [{"oid": 1, "new_status": "sent", "inc": 1,
                                                              "error": None, "sent": None}]}),
    }[op.name]  # fmt: skip
    fast = _pg_statement(stmt, dialect, tuple(row))
    assert fast is not None
    assert "%(" in fast.sql and {name for name, _ in fast.binds} <= set(row)
    if op is ONSHARE_UPSERT:  # a re-armed row is pending again: the statement's own value, not the row's
        assert "pending" in fast.constants.values()


def test_json_rows_carry_every_column() -> None:
    """On PostgreSQL token and history rows go as one JSON array read by `json_to_recordset`, which
    reads a missing or misspelt key as NULL without a word: the record's columns must be exactly the
    rows' keys."""
    from token_service.records import tokens

    t = _token(1, status=Status.CALLED, desk="D1")
    assert set(tokens._TOKEN_COLUMNS) == set(token_rows([t])[0][1])
    assert set(tokens._EVENT_COLUMNS) == set(event_row(HIP, "1-1", "called", 0, "D1", t))


def test_a_value_too_long_is_refused_not_cut(
    tmp_path: Path, postgres_database_url: str, redis_url: str
) -> None:
    """The JSON rows are read as unsized text, so the table's own column sizes still refuse a value too
    long (a sized record type would cut it silently)."""
    settings = make_settings(tmp_path, redis_url, postgres_database_url)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            long = dataclasses.replace(_token(1), label="A" * 40)  # the column holds 32
            with pytest.raises(Unavailable):
                await writer.submit_rows(token_rows([long]))
            async with engine.connect() as conn:
                assert (await conn.execute(select(TOKEN))).first() is None

    asyncio.run(scenario())


def test_statements_compile_once(tmp_path: Path, postgres_database_url: str, redis_url: str) -> None:
    """Every batch reuses the statements compiled for the first: nothing is compiled (and kept) per batch."""
    from token_service.records import writer as writer_module

    settings = make_settings(tmp_path, redis_url, postgres_database_url)

    async def scenario() -> list[int]:
        sizes = []
        async with running_writer(settings) as (_, writer):
            for n in range(1, 5):
                t = _token(n)
                (oid,) = await writer.submit_rows([(ONSHARE_UPSERT, _share_row(f"req-{n}", t.id, "n"))])
                at = datetime.now(UTC)
                await writer.submit_rows([
                    *token_rows([t], {"name": "x"}),
                    (EVENT_INSERT, event_row(HIP, f"1-{n}", "issued", T0, "", t)),
                    (AUDIT_INSERT, {"at": at, "actor": "clerk", "action": "issue", "hip_id": HIP, "target": t.id}),
                    (ATTEMPT_INSERT, {"on_share_id": oid, "at": at, "outbound_request_id": "o", "status_code": 202,
                                      "ok": True, "error": None, "duration_ms": 1}),
                    (ONSHARE_OUTCOME, {"oid": oid, "new_status": "sent", "inc": 1, "error": None, "sent": at}),
                ])  # fmt: skip
                sizes.append(len(writer_module._PG_COMPILED))
        return sizes

    sizes = asyncio.run(scenario())
    assert sizes[1:] == [sizes[0]] * 3, sizes


def test_a_copy_that_changes_nothing_leaves_the_row_alone(
    tmp_path: Path, postgres_database_url: str, redis_url: str
) -> None:
    """The recorder's copy of a state already stored neither rewrites nor locks the row (a lock is a
    WAL record every commit waits for); a copy with something to give still lands in the same batch."""
    settings = make_settings(tmp_path, redis_url, postgres_database_url)

    def anonymous(t: Token) -> Token:
        return dataclasses.replace(t, abha_address=None, request_id=None)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            await writer.submit_rows([
                *token_rows([_token(1)], {"name": "Sita Devi"}),
                *token_rows([_token(2, version=2, status=Status.CALLED, desk="D1")]),
                *token_rows([anonymous(_token(3))]),
            ])  # fmt: skip

            async def stamps() -> dict[int, tuple[str, str]]:
                async with engine.connect() as conn:
                    rows = await conn.execute(text("SELECT number, xmin::text, xmax::text FROM token"))
                    return {n: (xmin, xmax) for n, xmin, xmax in rows}

            before = await stamps()
            assert all(xmax == "0" for _, xmax in before.values()), before
            # Copies of what is stored (an older version for 2), and for 3 the identity it lacked.
            await writer.submit_rows(token_rows([_token(1), _token(2), _token(3)]))
            after = await stamps()
            assert after[1] == before[1] and after[2] == before[2], (before, after)
            assert after[3][0] != before[3][0]  # rewritten: it gained its identity
            async with engine.connect() as conn:
                toks = {r.number: r for r in await conn.execute(select(TOKEN))}
            assert toks[1].patient == {"name": "Sita Devi"}
            assert (toks[2].status, toks[2].version) == ("called", 2)
            assert (toks[3].abha_address, toks[3].request_id) == ("p3@sbx", "req-3")

    asyncio.run(scenario())


async def _two_batched_shares(writer: SqlWriter) -> list[list[Any]]:
    """Two shares' rows written together (tokens 2 and 3, on-shares req-2 and req-3, one event)."""
    t2, t3 = _token(2), _token(3)
    return list(await asyncio.gather(
        writer.submit_rows([*token_rows([t2], {"name": "a"}), (ONSHARE_UPSERT, _share_row("req-2", t2.id, "a"))]),
        writer.submit_rows([*token_rows([t3], {"name": "b"}), (ONSHARE_UPSERT, _share_row("req-3", t3.id, "b")),
                            (EVENT_INSERT, event_row(HIP, "1-3", "issued", T0, "", t3))]),
    ))  # fmt: skip


async def _answers_are_the_on_share_ids(engine: AsyncEngine, answers: list[list[Any]]) -> None:
    async with engine.connect() as conn:
        ids = dict((await conn.execute(select(ON_SHARE.c.request_id, ON_SHARE.c.id))).all())
    assert answers == [[None, ids["req-2"]], [None, ids["req-3"], None]]


def test_a_batch_is_one_round_trip(
    tmp_path: Path, postgres_database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's statements, the on-share upsert's RETURNING among them, and its COMMIT reach
    PostgreSQL in one pipeline and come back in one answer: each acknowledgement in it waits for one
    round trip to the database, not one per RETURNING read plus one for the COMMIT and one more for
    leaving the pipeline. The batch's own Sync makes the server answer: no flush request follows it
    (a message and a write of its own). The on-share ids are read from that answer."""
    from psycopg._pipeline_base import BasePipeline

    settings = make_settings(tmp_path, redis_url, postgres_database_url)
    trips: list[str] = []
    fetch, sync = BasePipeline._fetch_gen, BasePipeline._sync_gen

    def counted_fetch(self: Any, *, flush: bool) -> Any:
        if flush:  # a flush request: the client waits for the server's answers so far
            trips.append("flush")
        return fetch(self, flush=flush)

    def counted_sync(self: Any) -> Any:
        trips.append("sync")
        return sync(self)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            await writer.submit_rows(token_rows([_token(1)]))  # the writer connects
            monkeypatch.setattr(BasePipeline, "_fetch_gen", counted_fetch)
            monkeypatch.setattr(BasePipeline, "_sync_gen", counted_sync)
            answers = await _two_batched_shares(writer)
            monkeypatch.undo()
            assert trips == [], trips  # leaving the pipeline: its Sync, then the answers
            await _answers_are_the_on_share_ids(engine, answers)

    asyncio.run(scenario())


def test_a_batch_reaches_the_server_in_one_write(
    tmp_path: Path, postgres_database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg would send each statement of the pipeline as it is queued (BEGIN, every statement, COMMIT,
    Sync: a TCP segment each, each waking the server). The writer's pipeline communicates once, when
    every statement and the Sync are in libpq's buffer; the answers are those of a plain pipeline."""
    import psycopg._pipeline_base as pipeline_base

    settings = make_settings(tmp_path, redis_url, postgres_database_url)
    calls: list[int] = []
    communicate = pipeline_base.pipeline_communicate

    def counted(pgconn: Any, commands: Any) -> Any:
        calls.append(len(commands))  # commands not yet handed to libpq
        return communicate(pgconn, commands)

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            await writer.submit_rows(token_rows([_token(1)]))  # the writer connects
            monkeypatch.setattr(pipeline_base, "pipeline_communicate", counted)
            answers = await _two_batched_shares(writer)
            monkeypatch.undo()
            assert calls == [0], calls  # one communication, everything already queued in libpq
            await _answers_are_the_on_share_ids(engine, answers)
            # A failing statement still fails its batch, and the writer's next batch goes through.
            with pytest.raises(Unavailable):  # a REQUEST-ID longer than its column
                await writer.submit_rows([(ONSHARE_UPSERT, _share_row("r" * 65, _token(4).id, "x"))])
            assert await writer.submit_rows(token_rows([_token(5)])) == [None]

    asyncio.run(scenario())


def test_a_batch_runs_without_a_greenlet(
    tmp_path: Path, postgres_database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer reaches psycopg without SQLAlchemy's greenlet bridge: each greenlet it would start
    maps a frame stack of its own (an mmap and a munmap), several per batch."""
    import greenlet

    settings = make_settings(tmp_path, redis_url, postgres_database_url)
    switches: list[str] = []

    async def scenario() -> None:
        async with running_writer(settings) as (_, writer):
            await writer.submit_rows(token_rows([_token(1)]))  # the writer connects
            previous = greenlet.settrace(lambda event, args: switches.append(event))
            try:
                t2 = _token(2)
                answer = await writer.submit_rows(
                    [*token_rows([t2], {"name": "a"}), (ONSHARE_UPSERT, _share_row("req-2", t2.id, "a"))]
                )
            finally:
                greenlet.settrace(previous)
            assert answer[0] is None and isinstance(answer[1], int)
            assert switches == []

    asyncio.run(scenario())


def test_a_work_commits_with_its_batch_or_not_at_all(
    tmp_path: Path, postgres_database_url: str, redis_url: str
) -> None:
    """A work function's statements (run through SQLAlchemy) share the batch's transaction, which the
    writer opens and commits itself: a later statement of the batch that fails takes the work's rows
    back with it, and a work that fails after writing leaves nothing behind."""
    settings = make_settings(tmp_path, redis_url, postgres_database_url)

    def audit(action: str) -> Any:
        async def work(conn: Any) -> None:
            await conn.execute(AUDIT.insert().values(at=datetime.now(UTC), actor="clerk", action=action))
            if action == "fails":
                await conn.execute(text("SELECT 1 / 0"))

        return work

    async def scenario() -> None:
        async with running_writer(settings) as (engine, writer):
            await writer.submit_rows(token_rows([_token(1)]))  # the writer's connection is up
            orphan = {"on_share_id": 999_999, "at": datetime.now(UTC), "outbound_request_id": "out-x",
                      "status_code": 202, "ok": True, "error": None, "duration_ms": 1}  # fmt: skip
            first = await asyncio.gather(
                writer.submit(audit("kept")),
                writer.submit_rows([*token_rows([_token(2)]), (ATTEMPT_INSERT, orphan)]),
                return_exceptions=True,
            )
            assert first[0] is None and isinstance(first[1], Unavailable)
            with pytest.raises(Unavailable):
                await writer.submit(audit("fails"))
            await writer.submit(audit("after"))
            async with engine.connect() as conn:
                actions = sorted(r.action for r in await conn.execute(select(AUDIT)))
                numbers = [r.number for r in await conn.execute(select(TOKEN).order_by(TOKEN.c.number))]
            assert actions == ["after", "kept"]
            assert numbers == [1]

    asyncio.run(scenario())
