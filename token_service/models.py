"""SQL records (SQLModel): configuration tables, every token and its append-only history."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    UniqueConstraint,
    false,
    text,
)
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


def _flag() -> Any:
    """A boolean setting that is off unless an admin turns it on (also for rows older than the column)."""
    return Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


class Facility(SQLModel, table=True):
    """A hospital, identified by its HFR id (= ABDM HIP id)."""

    hip_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    names: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    timezone: str = Field(default="Asia/Kolkata", max_length=64)
    languages: list[str] = Field(default_factory=lambda: ["hi", "en"], sa_column=Column(JSON, nullable=False))
    validity_seconds: int | None = None  # None: OPD_TOKEN_VALIDITY_SECONDS
    priority_ratio: int = 2
    ageing_seconds: int = 2700
    skip_places: int = 3
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    # Board: show masked patient names ("R**** K****") next to called numbers; read it only with a board
    # device token (or staff login), even while OPD_BOARD_PUBLIC is on.
    board_names: bool = _flag()
    board_requires_device: bool = _flag()


class Counter(SQLModel, table=True):
    """An ABDM counter code: one line with its own QR poster and daily token sequence."""

    __table_args__ = (UniqueConstraint("hip_id", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    hip_id: str = Field(foreign_key="facility.hip_id", index=True, max_length=64)
    code: str = Field(max_length=20)
    name: str = Field(max_length=200)
    names: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    department: str = Field(default="", max_length=200)
    prefix: str = Field(default="", max_length=8)
    active: bool = True


class Desk(SQLModel, table=True):
    """A window or room a clerk calls from; serves one or more counters."""

    __table_args__ = (UniqueConstraint("hip_id", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    hip_id: str = Field(foreign_key="facility.hip_id", index=True, max_length=64)
    code: str = Field(max_length=20)
    name: str = Field(max_length=200)
    counters: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    active: bool = True


class User(SQLModel, table=True):
    """Staff: admins configure, clerks call. A clerk with no counters may serve every counter."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, max_length=64)
    password_hash: str = Field(max_length=255)
    role: str = Field(max_length=16)  # admin | clerk
    hip_id: str | None = Field(default=None, foreign_key="facility.hip_id", max_length=64)
    counters: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))


class TokenRecord(SQLModel, table=True):
    """The durable copy of a token; the latest version wins (upserts are guarded by `version`)."""

    __tablename__ = "token"
    __table_args__ = (
        UniqueConstraint("hip_id", "origin_counter", "local_date", "number", name="uq_token_number"),
        Index("ix_token_day", "hip_id", "local_date"),
    )
    id: str = Field(primary_key=True, max_length=120)
    public_id: str = Field(unique=True, max_length=32)
    hip_id: str = Field(max_length=64)
    counter: str = Field(max_length=20)
    origin_counter: str = Field(max_length=20)
    local_date: date
    number: int
    label: str = Field(max_length=32)
    status: str = Field(max_length=16)
    priority: str = Field(max_length=16)
    source: str = Field(max_length=16)
    abha_address: str | None = Field(default=None, max_length=120)
    # Not indexed: a REQUEST-ID is looked up in Redis, and in SQL by the on-share's unique key.
    request_id: str | None = Field(default=None, max_length=64)
    desk: str | None = Field(default=None, max_length=20)
    skips: int = 0
    recalls: int = 0
    order: float = 0
    version: int = 0
    # none_as_null: a token without a shared profile holds SQL NULL (not JSON null), so "has no profile
    # yet" is `IS NULL` on every database and the token upsert can fill it in.
    patient: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )
    issued_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    called_at: datetime | None = _ts()
    served_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    expired_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    day_end_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))


class TokenEvent(SQLModel, table=True):
    """Append-only history: one row per state change, keyed by its Redis stream entry."""

    __tablename__ = "token_event"
    __table_args__ = (UniqueConstraint("hip_id", "stream_id", name="uq_event_stream"),)
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    )
    hip_id: str = Field(max_length=64)
    stream_id: str = Field(max_length=40)
    token_id: str = Field(max_length=120, index=True)
    kind: str = Field(max_length=20)
    status: str = Field(max_length=16)
    version: int
    desk: str | None = Field(default=None, max_length=20)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class AuditLog(SQLModel, table=True):
    """Who did what (staff actions, configuration changes). Written by the service only."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    actor: str = Field(max_length=64)
    action: str = Field(max_length=40)
    hip_id: str | None = Field(default=None, max_length=64)
    target: str | None = Field(default=None, max_length=120)
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class Device(SQLModel, table=True):
    """A board, kiosk or printer PC; authenticates with a bearer token stored only as a hash."""

    __table_args__ = (UniqueConstraint("hip_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    hip_id: str = Field(foreign_key="facility.hip_id", index=True, max_length=64)
    name: str = Field(max_length=64)
    kind: str = Field(max_length=16)  # board | kiosk | printer
    token_hash: str = Field(unique=True, max_length=64)
    printer: str | None = Field(default=None, max_length=64)  # a kiosk's paired printer device name
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    last_seen_at: datetime | None = _ts()


_PENDING_ROWS = text("status = 'pending'")  # the on-shares still owed


class OnShare(SQLModel, table=True):
    """Outbox row: one on-share owed to the ABDM gateway for one inbound share."""

    __tablename__ = "on_share"
    # Every share adds a row and changes its status once. Only the pending rows are indexed by status
    # (the sweep's question): a row's move to sent or failed then adds no entry to that index, and
    # facility lookups use the unique key's leading column.
    __table_args__ = (
        UniqueConstraint("hip_id", "request_id", name="uq_onshare_request"),
        Index("ix_on_share_pending", "id", postgresql_where=_PENDING_ROWS, sqlite_where=_PENDING_ROWS),
    )  # fmt: skip
    id: int | None = Field(default=None, primary_key=True)
    hip_id: str = Field(max_length=64)
    request_id: str = Field(max_length=64)  # the inbound REQUEST-ID
    version: str = Field(max_length=4)  # v3 | v1
    token_id: str | None = Field(default=None, max_length=120)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16)  # pending | sent | failed
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    deadline_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    sent_at: datetime | None = _ts()


class OnShareAttempt(SQLModel, table=True):
    """Every call we made to the gateway for an on-share, with its outcome."""

    __tablename__ = "on_share_attempt"
    id: int | None = Field(default=None, primary_key=True)
    on_share_id: int = Field(foreign_key="on_share.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    outbound_request_id: str = Field(max_length=64)
    status_code: int | None = None
    ok: bool = False
    error: str | None = Field(default=None, max_length=500)
    duration_ms: int = 0


class PrintJob(SQLModel, table=True):
    """A slip owed to one printer device. Delivered at least once; the agent de-duplicates by id."""

    __tablename__ = "print_job"
    id: int | None = Field(default=None, primary_key=True)
    hip_id: str = Field(max_length=64, index=True)
    printer: str = Field(max_length=64)
    token_id: str = Field(max_length=120)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="queued", max_length=16, index=True)  # queued | delivered | printed | failed
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    requested_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True)))
    delivered_at: datetime | None = _ts()
    printed_at: datetime | None = _ts()
