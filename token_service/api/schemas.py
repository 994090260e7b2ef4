"""JSON shapes of the staff API (requests and responses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from token_service.clock import from_ms
from token_service.queue.service import Token
from token_service.queue.status import Priority

CODE = r"^[A-Za-z0-9]{1,20}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class CallNextIn(Strict):
    desk: str | None = Field(default=None, pattern=CODE)


class IssueIn(Strict):
    name: str | None = Field(default=None, max_length=200)
    priority: Priority = Priority.NORMAL
    abha_qr: str | None = Field(default=None, max_length=4096)


class ActionIn(Strict):
    desk: str | None = Field(default=None, pattern=CODE)


class SkipIn(ActionIn):
    places: int | None = Field(default=None, ge=1, le=50)


class TransferIn(ActionIn):
    counter: str = Field(pattern=CODE)


class TokenOut(BaseModel):
    id: str
    public_id: str
    number: int
    label: str
    counter: str
    origin_counter: str
    status: str
    priority: str
    source: str
    desk: str | None
    skips: int
    recalls: int
    local_date: str
    issued_at: datetime
    called_at: datetime | None
    served_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime
    version: int
    outcome: str | None = None
    patient: dict[str, Any] | None = None

    @classmethod
    def of(cls, t: Token, *, outcome: str | None = None, patient: dict[str, Any] | None = None) -> TokenOut:
        return cls(
            id=t.id, public_id=t.public_id, number=t.number, label=t.label, counter=t.counter,
            origin_counter=t.origin_counter, status=t.status.value, priority=t.priority.value,
            source=t.source.value, desk=t.desk, skips=t.skips, recalls=t.recalls,
            local_date=f"{t.local_date[:4]}-{t.local_date[4:6]}-{t.local_date[6:]}",
            issued_at=from_ms(t.issued_ms),
            called_at=from_ms(t.called_ms), served_at=from_ms(t.served_ms),
            finished_at=from_ms(t.finished_ms), expires_at=from_ms(t.expires_ms),
            version=t.version, outcome=outcome, patient=patient,
        )  # fmt: skip


class QueueOut(BaseModel):
    hip_id: str
    counter: str
    waiting: list[TokenOut]
    called: list[TokenOut]


class CallOut(BaseModel):
    called: TokenOut
    completed: TokenOut | None = None
