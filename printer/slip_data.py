"""What a token slip says, without how it is drawn: the print-job JSON the service sends and the agent
reads. The service imports only this (no Pillow, no QR library); `printer.slip` renders it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WIDTH_58MM = 384
WIDTH_80MM = 576

LANGUAGES = ("en", "hi", "gu")
PRIORITIES = ("normal", "senior", "pwd", "pregnant", "emergency")
SOURCES = ("scan_share", "walk_in", "abha_card")

PLEASE_WAIT: dict[str, str] = {
    "en": "Please wait for your number on the screen",
    "hi": "कृपया स्क्रीन पर अपने नंबर की प्रतीक्षा करें",
    "gu": "કૃપા કરીને સ્ક્રીન પર તમારા નંબરની રાહ જુઓ",
}
TOKEN_WORD: dict[str, str] = {"en": "TOKEN", "hi": "टोकन", "gu": "ટોકન"}
SCAN_FOR_STATUS: dict[str, str] = {
    "en": "Scan to follow your turn",
    "hi": "अपनी बारी देखने के लिए स्कैन करें",
    "gu": "તમારો વારો જોવા માટે સ્કેન કરો",
}
PRIORITY_LABELS: dict[str, dict[str, str]] = {
    "senior": {"en": "SENIOR CITIZEN", "hi": "वरिष्ठ नागरिक", "gu": "વરિષ્ઠ નાગરિક"},
    "pwd": {"en": "PERSON WITH DISABILITY", "hi": "दिव्यांगजन", "gu": "દિવ્યાંગજન"},
    "pregnant": {"en": "PREGNANT WOMAN", "hi": "गर्भवती महिला", "gu": "સગર્ભા મહિલા"},
    "emergency": {"en": "EMERGENCY", "hi": "आपातकालीन", "gu": "કટોકટી"},
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class SlipData:
    """Everything printed on one token slip; travels inside print-job JSON."""

    facility_names: dict[str, str]
    counter_names: dict[str, str]
    token_label: str
    priority: str
    issued_at: datetime
    timezone: str
    languages: list[str]
    status_url: str
    footer: str | None = None
    source: str = "walk_in"

    def __post_init__(self) -> None:
        # Validated here because slips arrive as JSON from another process: fail at parse, not mid-print.
        if not self.facility_names.get("en"):
            raise ValueError("facility_names must include an English ('en') name")
        if not self.token_label.strip():
            raise ValueError("token_label is empty")
        if self.priority not in PRIORITIES:
            raise ValueError(f"unknown priority {self.priority!r}; expected one of {PRIORITIES}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; expected one of {SOURCES}")
        if not self.languages or len(set(self.languages)) != len(self.languages):
            raise ValueError("languages must be a non-empty list without duplicates")
        unknown = [lang for lang in self.languages if lang not in LANGUAGES]
        if unknown:
            raise ValueError(f"unsupported slip languages {unknown}; supported: {LANGUAGES}")
        if self.issued_at.tzinfo is None or self.issued_at.utcoffset() is None:
            raise ValueError("issued_at must be timezone-aware")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO 8601 datetime)."""
        return {
            "facility_names": dict(self.facility_names),
            "counter_names": dict(self.counter_names),
            "token_label": self.token_label,
            "priority": self.priority,
            "issued_at": self.issued_at.isoformat(),
            "timezone": self.timezone,
            "languages": list(self.languages),
            "status_url": self.status_url,
            "footer": self.footer,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SlipData:
        """Parse the dict made by to_json; raises ValueError on a malformed job."""
        try:
            return cls(
                facility_names={str(k): str(v) for k, v in d["facility_names"].items()},
                counter_names={str(k): str(v) for k, v in d.get("counter_names", {}).items()},
                token_label=str(d["token_label"]),
                priority=str(d.get("priority", "normal")),
                issued_at=datetime.fromisoformat(str(d["issued_at"])),
                timezone=str(d.get("timezone", "Asia/Kolkata")),
                languages=[str(lang) for lang in d.get("languages", ["en"])],
                status_url=str(d["status_url"]),
                footer=None if d.get("footer") is None else str(d["footer"]),
                source=str(d.get("source", "walk_in")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed slip data: {exc!r}") from exc


def format_issued_at(issued_at: datetime, timezone: str) -> str:
    """'12 Mar 2025, 10:05 AM IST': spelled out so day and month can't be swapped, locale-independent."""
    local = issued_at.astimezone(ZoneInfo(timezone))
    hour = local.hour % 12 or 12
    half = "AM" if local.hour < 12 else "PM"
    zone = local.tzname() or ""
    date = f"{local.day} {_MONTHS[local.month - 1]} {local.year}"
    return f"{date}, {hour}:{local.minute:02d} {half} {zone}".strip()
