"""Inbound ABDM profile-share bodies (v3, v1.0, v0.5), parsed leniently into one `ShareRequest`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from token_service.abdm.profile import (
    Address,
    PatientProfile,
    ProfileValueError,
    clean_abha_address,
    clean_abha_number,
    clean_address,
    clean_birth,
    clean_gender,
    clean_name,
    clean_phone,
    empty_address,
)

__all__ = ["PatientProfile", "ShareParseError", "ShareRequest", "parse_share"]

PROFILE_SHARE = "PROFILE_SHARE"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
COUNTER_CODE_RE = re.compile(r"^[A-Za-z0-9]{1,20}$")
_HIP_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_MOBILE_TYPES = frozenset({"MOBILE", "MOBILE_NUMBER", "PHONE", "PHONE_NUMBER"})


class ShareParseError(Exception):
    """A share we refuse. `code` is stable (clients and tests match on it); `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.message}


# ---- lenient scalar types: real traffic sends numbers where the spec says strings and back ----


def _loose_str(value: object) -> object:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a string")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value)) if value.is_integer() else str(value)
    raise ValueError("expected a string")


def _loose_int(value: object) -> object:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("expected an integer")


LooseStr = Annotated[str | None, BeforeValidator(_loose_str)]
LooseInt = Annotated[int | str | None, BeforeValidator(_loose_int)]


def _address_or_line(value: object) -> object:
    # One client sends the address as a single string; keep it as the line rather than refuse.
    return {"line": value} if isinstance(value, str) else value


def _intent_object(value: object) -> object:
    return {"type": value} if isinstance(value, str) else value


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=4096)


class WireAddress(_Wire):
    line: LooseStr = None
    district: LooseStr = None
    state: LooseStr = None
    pincode: LooseStr = None
    pinCode: LooseStr = None

    def normalised(self) -> Address:
        return clean_address(self.line, self.district, self.state, self.pincode or self.pinCode)


WireAddressField = Annotated[WireAddress | None, BeforeValidator(_address_or_line)]


class V3Patient(_Wire):
    abhaNumber: LooseStr = None
    abhaAddress: LooseStr = None
    name: LooseStr = None
    gender: LooseStr = None
    yearOfBirth: LooseInt = None
    monthOfBirth: LooseInt = None
    dayOfBirth: LooseInt = None
    address: WireAddressField = None
    phoneNumber: LooseStr = None


class V3MetaData(_Wire):
    hipId: LooseStr = None
    context: LooseStr = None
    hprId: LooseStr = None
    latitude: LooseStr = None
    longitude: LooseStr = None


class V3Profile(_Wire):
    patient: V3Patient


class V3Body(_Wire):
    intent: LooseStr = None
    metaData: V3MetaData
    profile: V3Profile


class V1Identifier(_Wire):
    type: LooseStr = None
    value: LooseStr = None


class V1Patient(_Wire):
    healthId: LooseStr = None
    healthIdNumber: LooseStr = None
    name: LooseStr = None
    gender: LooseStr = None
    yearOfBirth: LooseInt = None
    monthOfBirth: LooseInt = None
    dayOfBirth: LooseInt = None
    address: WireAddressField = None
    identifiers: list[V1Identifier] | None = Field(default=None, max_length=50)


class V1Profile(_Wire):
    hipCode: LooseStr = None
    patient: V1Patient


class V1Intent(_Wire):
    type: LooseStr = None


class V1Location(_Wire):
    latitude: LooseStr = None
    longitude: LooseStr = None


class V1Body(_Wire):
    requestId: LooseStr = None
    timestamp: LooseStr = None
    intent: Annotated[V1Intent | None, BeforeValidator(_intent_object)] = None
    location: V1Location | None = None
    profile: V1Profile


# ---- the normalised result ----


@dataclass(frozen=True)
class ShareRequest:
    """One inbound share, whatever version it arrived in. `hip_id` is the body's; the header is separate."""

    version: Literal["v3", "v1"]
    request_id: str
    timestamp: datetime | None
    hip_id: str | None
    counter_code: str
    intent: str
    profile: PatientProfile

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, e.g. for the on-share outbox; `from_json` reads it back."""
        return {
            "version": self.version,
            "request_id": self.request_id,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "hip_id": self.hip_id,
            "counter_code": self.counter_code,
            "intent": self.intent,
            "profile": self.profile.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        return self.to_json()

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> ShareRequest:
        raw = data if isinstance(data, Mapping) else json.loads(data)
        version = raw["version"]
        if version not in ("v3", "v1"):
            raise ValueError(f"unknown share version {version!r}")
        stamp = raw.get("timestamp")
        return cls(
            version=version,
            request_id=str(raw["request_id"]),
            timestamp=datetime.fromisoformat(stamp) if stamp else None,
            hip_id=raw.get("hip_id"),
            counter_code=str(raw["counter_code"]),
            intent=str(raw["intent"]),
            profile=PatientProfile.from_json(raw["profile"]),
        )


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works on a plain dict as well as on Starlette's Headers (whose own
    `get` ignores case, without decoding every header as `items()` does)."""
    found = headers.get(name)
    if found is not None:
        return found
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_timestamp(value: str | None) -> datetime | None:
    """ISO-8601; naive means UTC (the gateway's clock). Unparseable → None: it is informational only."""
    if not value or len(value) > 64:
        return None
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _request_id(value: str | None, where: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ShareParseError("missing_request_id", f"{where} is required")
    if not _REQUEST_ID_RE.match(text):
        raise ShareParseError("invalid_request_id", f"{where} must be 1-128 letters, digits or ._:-")
    return text


def _counter_code(value: str | None, where: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ShareParseError("invalid_counter_code", f"{where} (the counter code) is required")
    if not COUNTER_CODE_RE.match(text):
        raise ShareParseError("invalid_counter_code", f"{where} must be 1-20 letters or digits")
    return text


def _hip_id(value: str | None, where: str) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    if not _HIP_ID_RE.match(text):
        raise ShareParseError("invalid_hip_id", f"{where} is not a valid facility id")
    return text


def _intent(value: str | None, *, required: bool, where: str) -> str:
    text = (value or "").strip().upper()
    if not text:
        if required:
            raise ShareParseError("unsupported_intent", f"{where} is required")
        return PROFILE_SHARE  # v0.5 has no intent: the path itself means profile share
    if text != PROFILE_SHARE:
        raise ShareParseError("unsupported_intent", f"intent {text[:40]!r} is not {PROFILE_SHARE}")
    return text


def _validation_message(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:300]


def _load_json(body: bytes, max_bytes: int) -> dict[str, Any]:
    if len(body) > max_bytes:
        raise ShareParseError("body_too_large", f"body is larger than {max_bytes} bytes")
    try:
        # orjson is strict where the standard library is lenient: NaN and Infinity, invalid UTF-8 and
        # lone surrogates are refused, and nesting is bounded; and it costs a share a third of the time.
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ShareParseError("invalid_json", "body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ShareParseError("invalid_body", "body must be a JSON object")
    return data


def _profile(
    patient: V3Patient | V1Patient, number: str | None, address: str | None, phone: str | None
) -> PatientProfile:
    year, month, day = clean_birth(patient.yearOfBirth, patient.monthOfBirth, patient.dayOfBirth)
    return PatientProfile(
        abha_number=clean_abha_number(number),
        abha_address=clean_abha_address(address),
        name=clean_name(patient.name, what="profile.patient.name"),
        gender=clean_gender(patient.gender),
        year_of_birth=year,
        month_of_birth=month,
        day_of_birth=day,
        phone=phone,
        address=patient.address.normalised() if patient.address else empty_address(),
    )


def _v1_phone(patient: V1Patient) -> str | None:
    for ident in patient.identifiers or []:
        if (ident.type or "").strip().upper() in _MOBILE_TYPES and (phone := clean_phone(ident.value)):
            return phone
    return None


def _require_address(profile: PatientProfile, where: str) -> None:
    # The ABHA address is what the on-share acknowledges and what a re-scan is matched on.
    if profile.abha_address is None:
        raise ShareParseError("invalid_body", f"{where} is required")


def _parse_v3(data: dict[str, Any], headers: Mapping[str, str]) -> ShareRequest:
    request_id = _request_id(header_value(headers, "REQUEST-ID"), "REQUEST-ID header")
    try:
        wire = V3Body.model_validate(data)
    except ValidationError as exc:
        raise ShareParseError("invalid_body", _validation_message(exc)) from exc
    intent = _intent(wire.intent, required=True, where="intent")
    counter = _counter_code(wire.metaData.context, "metaData.context")
    hip_id = _hip_id(wire.metaData.hipId, "metaData.hipId")
    try:
        patient = wire.profile.patient
        profile = _profile(patient, patient.abhaNumber, patient.abhaAddress, clean_phone(patient.phoneNumber))
    except ProfileValueError as exc:
        raise ShareParseError("invalid_body", str(exc)) from exc
    _require_address(profile, "profile.patient.abhaAddress")
    return ShareRequest(
        version="v3",
        request_id=request_id,
        timestamp=parse_timestamp(header_value(headers, "TIMESTAMP")),
        hip_id=hip_id,
        counter_code=counter,
        intent=intent,
        profile=profile,
    )


def _parse_v1(data: dict[str, Any]) -> ShareRequest:
    try:
        wire = V1Body.model_validate(data)
    except ValidationError as exc:
        raise ShareParseError("invalid_body", _validation_message(exc)) from exc
    request_id = _request_id(wire.requestId, "requestId")
    intent = _intent(wire.intent.type if wire.intent else None, required=False, where="intent.type")
    counter = _counter_code(wire.profile.hipCode, "profile.hipCode")
    try:
        patient = wire.profile.patient
        profile = _profile(patient, patient.healthIdNumber, patient.healthId, _v1_phone(patient))
    except ProfileValueError as exc:
        raise ShareParseError("invalid_body", str(exc)) from exc
    _require_address(profile, "profile.patient.healthId")
    return ShareRequest(
        version="v1",
        request_id=request_id,
        timestamp=parse_timestamp(wire.timestamp),
        hip_id=None,
        counter_code=counter,
        intent=intent,
        profile=profile,
    )


def parse_share(
    version: Literal["v3", "v1", "v0.5"],
    body: bytes,
    headers: Mapping[str, str],
    *,
    max_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> ShareRequest:
    """Parse an inbound share; raises only `ShareParseError`. v0.5 normalises to version "v1"."""
    if version not in ("v3", "v1", "v0.5"):
        raise ShareParseError("unsupported_version", f"share version {version!r} is not supported")
    data = _load_json(body, max_bytes)
    if version == "v3":
        return _parse_v3(data, headers)
    return _parse_v1(data)
