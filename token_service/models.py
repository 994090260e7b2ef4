"""SQL records (SQLModel): configuration tables, every token and its append-only history."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


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
    request_id: str | None = Field(default=None, max_length=64, index=True)
    desk: str | None = Field(default=None, max_length=20)
    skips: int = 0
    recalls: int = 0
    order: float = 0
    version: int = 0
    patient: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
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
