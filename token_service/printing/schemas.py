"""JSON shapes of the print API: requests from staff and kiosks, and the agent protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DEVICE_NAME = r"^[A-Za-z0-9._-]{1,64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrintIn(Strict):
    printer: str | None = Field(default=None, pattern=DEVICE_NAME)
    # The language the patient chose at the kiosk: printed first on the slip, before the facility's.
    language: Literal["en", "hi", "gu"] | None = None


class PrintQueuedOut(BaseModel):
    job_id: int
    printer: str
    status: str


class JobOut(BaseModel):
    """One delivery of a job to the printer's agent; `payload` is `SlipData.to_json()`."""

    id: int
    token_id: str
    payload: dict[str, Any]
    attempt: int
    lease_seconds: float
    created_at: datetime | None


class AckIn(Strict):
    status: Literal["printed", "failed"]
    error: str | None = Field(default=None, max_length=500)


class AckOut(BaseModel):
    id: int
    status: str


class HeartbeatIn(Strict):
    healthy: bool
    detail: str = Field(default="", max_length=500)


class HeartbeatOut(BaseModel):
    printer: str
    queued: int


class PrinterOut(BaseModel):
    """A printer device as the admin page shows it."""

    name: str
    active: bool
    online: bool  # the agent heartbeated within the last ONLINE_WINDOW_S seconds
    last_seen_at: datetime | None
    healthy: bool | None  # None: no report yet (or too old)
    detail: str | None
    health_at: datetime | None
    queued: int  # waiting for the agent
    in_flight: int  # delivered, not yet acknowledged
    failed_24h: int
    last_printed_at: datetime | None
    kiosks: list[str]  # kiosk devices paired with this printer
