"""JSON shapes of the admin API: facility settings, counters, desks, users, devices, audit."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from token_service.api.schemas import CODE

LANGUAGES = ("en", "hi", "gu")
Lang = Literal["en", "hi", "gu"]
PREFIX = r"^[A-Za-z0-9-]{0,8}$"
USERNAME = r"^[A-Za-z0-9._@-]{1,64}$"
DEVICE_NAME = r"^[A-Za-z0-9._-]{1,64}$"
Names = dict[Lang, str]
# SQLite hands back naive datetimes (all stored in UTC); RFC 3339 date-times need the offset.
UtcDatetime = Annotated[datetime, AfterValidator(lambda v: v if v.tzinfo else v.replace(tzinfo=UTC))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _names(value: dict[Lang, str] | None) -> dict[Lang, str] | None:
    """Trim each name; a blank one means "no name in that language" and is dropped."""
    if value is None:
        return None
    out: dict[Lang, str] = {}
    for lang, text in value.items():
        text = " ".join(text.split())
        if len(text) > 200:
            raise ValueError(f"the {lang} name is longer than 200 characters")
        if text:
            out[lang] = text
    return out


def valid_timezone(name: str) -> str:
    # ZoneInfo alone accepts odd keys like "posixrules"; the IANA list is the contract.
    if name not in available_timezones():
        raise ValueError(f"unknown IANA timezone {name!r} (e.g. Asia/Kolkata)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {name!r}") from exc
    return name


class FacilityPatch(Strict):
    """Every field optional: only what is sent changes."""

    names: Names | None = None
    timezone: str | None = Field(default=None, max_length=64)
    validity_seconds: int | None = Field(default=None, ge=60, le=24 * 3600)
    use_default_validity: bool = False  # true: forget validity_seconds and use OPD_TOKEN_VALIDITY_SECONDS
    priority_ratio: int | None = Field(default=None, ge=1, le=20)
    ageing_seconds: int | None = Field(default=None, ge=60, le=24 * 3600)
    skip_places: int | None = Field(default=None, ge=1, le=50)
    languages: list[Lang] | None = Field(default=None, min_length=1, max_length=3)
    board_names: bool | None = Field(
        default=None, description='show masked names ("R**** K****") on the board'
    )
    board_requires_device: bool | None = Field(
        default=None,
        description="the board needs a board device token (or staff login), even when boards are public",
    )

    _trim = field_validator("names")(_names)

    @field_validator("languages")
    @classmethod
    def _distinct(cls, value: list[Lang] | None) -> list[Lang] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("each language may appear once")
        return value


class FacilityOut(BaseModel):
    hip_id: str
    name: str
    names: dict[str, str]
    timezone: str
    validity_seconds: int | None
    effective_validity_seconds: int
    priority_ratio: int
    ageing_seconds: int
    skip_places: int
    languages: list[str]
    board_names: bool
    board_requires_device: bool
    board_public: bool = Field(
        description="whether the board is readable without credentials now (OPD_BOARD_PUBLIC and not board_requires_device)"
    )


class CounterIn(Strict):
    code: str = Field(pattern=CODE)
    names: Names = Field(min_length=1)
    prefix: str = Field(default="", pattern=PREFIX)
    department: str = Field(default="", max_length=200)
    active: bool = True
    desks: list[str] | None = Field(default=None, max_length=50)  # None: a desk with the counter's code

    _trim = field_validator("names")(_names)

    @field_validator("desks")
    @classmethod
    def _desk_codes(cls, value: list[str] | None) -> list[str] | None:
        import re

        for code in value or []:
            if not re.match(CODE, code):
                raise ValueError(f"desk code {code!r} must be 1-20 letters or digits")
        return value


class CounterPatch(Strict):
    names: Names | None = None
    prefix: str | None = Field(default=None, pattern=PREFIX)
    department: str | None = Field(default=None, max_length=200)
    active: bool | None = None

    _trim = field_validator("names")(_names)


class CounterOut(BaseModel):
    code: str
    name: str
    names: dict[str, str]
    prefix: str
    department: str
    active: bool
    desks: list[str]


class DeskIn(Strict):
    code: str = Field(pattern=CODE)
    name: str = Field(default="", max_length=200)
    counters: list[str] = Field(default_factory=list, max_length=50)
    active: bool = True


class DeskPatch(Strict):
    name: str | None = Field(default=None, max_length=200)
    counters: list[str] | None = Field(default=None, max_length=50)
    active: bool | None = None


class DeskOut(BaseModel):
    code: str
    name: str
    counters: list[str]
    active: bool


class UserIn(Strict):
    username: str = Field(pattern=USERNAME)
    role: Literal["admin", "clerk"]
    password: str = Field(min_length=8, max_length=256)
    counters: list[str] = Field(default_factory=list, max_length=50)


class UserPatch(Strict):
    role: Literal["admin", "clerk"] | None = None
    counters: list[str] | None = Field(default=None, max_length=50)
    active: bool | None = None


class PasswordIn(Strict):
    password: str | None = Field(default=None, min_length=8, max_length=256)  # None: generate one


class UserOut(BaseModel):
    username: str
    role: str
    counters: list[str]
    active: bool
    created_at: UtcDatetime | None


class PasswordOut(BaseModel):
    username: str
    password: str | None = Field(description="the generated password, shown only in this answer")


class DeviceIn(Strict):
    name: str = Field(pattern=DEVICE_NAME)
    kind: Literal["board", "kiosk", "printer"]
    printer: str | None = Field(default=None, pattern=DEVICE_NAME)  # a kiosk's paired printer


class DeviceOut(BaseModel):
    name: str
    kind: str
    printer: str | None
    active: bool
    created_at: UtcDatetime | None
    last_seen_at: UtcDatetime | None


class DeviceCreated(DeviceOut):
    token: str = Field(description="the device's bearer token, shown only in this answer")


class AuditOut(BaseModel):
    id: int
    at: UtcDatetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_before: int | None = Field(description="pass as ?before= for the next (older) page")
