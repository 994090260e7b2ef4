"""The QR on a patient's ABHA card or in the ABHA app, read into a `PatientProfile` (unverified data)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from token_service.abdm.profile import (
    PatientProfile,
    ProfileValueError,
    clean_abha_address,
    clean_abha_number,
    clean_address,
    clean_birth,
    clean_gender,
    clean_name,
    clean_phone,
)

__all__ = ["AbhaCardError", "parse_abha_card"]

MAX_QR_BYTES = 8 * 1024
_DOB_RE = re.compile(r"^\s*(\d{1,4})\s*[/.-]\s*(\d{1,2})\s*[/.-]\s*(\d{1,4})\s*$")
_YEAR_RE = re.compile(r"^\s*(\d{4})\s*$")


class AbhaCardError(ValueError):
    """The scanned text is not an ABHA card / app QR we can use."""


def _text(data: Mapping[str, Any], *keys: str) -> str | None:
    """First non-empty value among `keys`; card printers spell some keys two ways."""
    for key in keys:
        value = data.get(key)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise AbhaCardError(f"{key} must be text")
        if value.strip():
            return value
    return None


def parse_dob(value: str | None) -> tuple[int | None, int | None, int | None]:
    """`14/8/1979` (card), `14-8-1979` (app), also `1979-08-14` and a bare year; else unknown."""
    if not value:
        return None, None, None
    year_only = _YEAR_RE.match(value)
    if year_only:
        return clean_birth(year_only.group(1), None, None)
    match = _DOB_RE.match(value)
    if not match:
        return None, None, None
    first, month, last = match.groups()
    if len(first) == 4:
        return clean_birth(first, month, last)
    return clean_birth(last, month, first)


def _load(raw: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(raw, Mapping):
        return raw
    if len(raw) > MAX_QR_BYTES:
        raise AbhaCardError("QR text is too long for an ABHA card")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise AbhaCardError("QR text is not an ABHA card (not JSON)") from exc
    if not isinstance(data, dict):
        raise AbhaCardError("QR text is not an ABHA card (not a JSON object)")
    return data


def parse_abha_card(raw: str | bytes | Mapping[str, Any]) -> PatientProfile:
    """Both variants: card (`hid`, `dob` 14/8/1979, `state name`) and app (`phr`, `dob` 14-8-1979)."""
    data = _load(raw)
    try:
        abha_number = clean_abha_number(_text(data, "hidn"))
        abha_address = clean_abha_address(_text(data, "phr", "hid"))
        if abha_number is None and abha_address is None:
            raise AbhaCardError("QR has neither an ABHA number (hidn) nor an ABHA address (hid/phr)")
        year, month, day = parse_dob(_text(data, "dob"))
        return PatientProfile(
            abha_number=abha_number,
            abha_address=abha_address,
            name=clean_name(_text(data, "name")),
            gender=clean_gender(_text(data, "gender")),
            year_of_birth=year,
            month_of_birth=month,
            day_of_birth=day,
            phone=clean_phone(_text(data, "mobile")),
            address=clean_address(
                _text(data, "address"),
                _text(data, "district_name", "district name"),
                _text(data, "state name", "state_name"),
                _text(data, "pincode", "pinCode"),
            ),
        )
    except ProfileValueError as exc:
        raise AbhaCardError(str(exc)) from exc
