"""Profile-share bodies exactly as the ABDM gateway sends them to a HIP (v3, v1.0, v0.5), for the sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DEFAULT_ADDRESS", "SHARE_PATHS", "SharePatient", "share_body"]

SHARE_PATHS = {
    "v3": "/api/v3/hip/patient/share",
    "v1": "/v1.0/patients/profile/share",
    "v0.5": "/v0.5/patients/profile/share",
}
DEFAULT_ADDRESS: Mapping[str, str | None] = {
    "line": "H No 12, Gali 4",
    "district": "South Delhi",
    "state": "Delhi",
    "pincode": "110029",
}
# Where the demo patient stands: the gateway forwards the phone's location with the share.
LATITUDE, LONGITUDE = "28.5672", "77.2100"


@dataclass(frozen=True)
class SharePatient:
    abha_address: str
    name: str = "Ramesh Kumar"
    gender: str | None = "M"
    year_of_birth: int | None = 1979
    month_of_birth: int | None = 8
    day_of_birth: int | None = 14
    abha_number: str | None = None
    phone: str | None = "9876543210"
    address: Mapping[str, str | None] | None = None


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)


def share_body(
    version: Literal["v3", "v1", "v0.5"],
    hip_id: str,
    counter: str,
    patient: SharePatient,
    request_id: str,
    timestamp: str,
    patient_extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body. v3 sends birth parts as strings and v1.0 as ints, as observed in traffic;
    `patient_extra` overrides or adds raw wire fields so tests can send any variant."""
    address = dict(patient.address if patient.address is not None else DEFAULT_ADDRESS)
    if version == "v3":
        wire: dict[str, Any] = {
            "abhaNumber": patient.abha_number,
            "abhaAddress": patient.abha_address,
            "name": patient.name,
            "gender": patient.gender,
            "dayOfBirth": _text(patient.day_of_birth),
            "monthOfBirth": _text(patient.month_of_birth),
            "yearOfBirth": _text(patient.year_of_birth),
            "address": address,
            "phoneNumber": patient.phone,
        }
        wire.update(patient_extra or {})
        # v3 carries no requestId/timestamp in the body: they travel as REQUEST-ID/TIMESTAMP headers.
        meta = {
            "hipId": hip_id,
            "context": counter,
            "hprId": None,
            "latitude": LATITUDE,
            "longitude": LONGITUDE,
        }
        return {"intent": "PROFILE_SHARE", "metaData": meta, "profile": {"patient": wire}}
    wire = {
        "healthId": patient.abha_address,
        "healthIdNumber": patient.abha_number,
        "name": patient.name,
        "gender": patient.gender,
        "address": address,
        "yearOfBirth": patient.year_of_birth,
        "monthOfBirth": patient.month_of_birth,
        "dayOfBirth": patient.day_of_birth,
        "identifiers": [{"type": "MOBILE", "value": patient.phone}] if patient.phone else [],
    }
    wire.update(patient_extra or {})
    body: dict[str, Any] = {"requestId": request_id, "timestamp": timestamp}
    if version == "v1":
        # v0.5 is v1.0 without these two.
        body["intent"] = {"type": "PROFILE_SHARE"}
        body["location"] = {"latitude": LATITUDE, "longitude": LONGITUDE}
    body["profile"] = {"hipCode": counter, "patient": wire}
    return body
