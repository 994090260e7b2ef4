"""The called patient's shared profile as a FHIR R4 Patient, for pasting into a hospital's HMIS.

Identifiers follow the ABDM FHIR implementation guide (NRCES): the ABHA number under the system
``https://healthid.ndhm.gov.in`` and the ABHA address under ``https://healthid.abdm.gov.in``, each typed
with the guide's identifier-type code system. Names are kept whole in ``name.text``: Indian names do not
split reliably into given/family parts, and a wrong split is worse than none.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from token_service.api.deps import StaffDep, StateDep
from token_service.errors import NotFound
from token_service.records import tokens as token_sql

router = APIRouter(prefix="/api/tokens", tags=["tokens"])
TokenId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9]{1,20}\.\d{8}\.\d{5,}$")]

PATIENT_PROFILE = "https://nrces.in/ndhm/fhir/r4/StructureDefinition/Patient"
ID_TYPE_SYSTEM = "https://nrces.in/ndhm/fhir/r4/CodeSystem/ndhm-identifier-type-code"
ABHA_NUMBER_SYSTEM = "https://healthid.ndhm.gov.in"
ABHA_ADDRESS_SYSTEM = "https://healthid.abdm.gov.in"
# FHIR administrative-gender has four codes; ABDM's T (transgender) has no closer match than "other".
GENDERS = {"M": "male", "F": "female", "O": "other", "T": "other", "D": "unknown", "U": "unknown"}


def birth_date(year: Any, month: Any, day: Any) -> str | None:
    """FHIR allows partial dates (YYYY, YYYY-MM); ABHA often knows only the year."""
    if not isinstance(year, int) or not 1800 <= year <= 9999:
        return None
    if not isinstance(month, int) or not 1 <= month <= 12:
        return f"{year:04d}"
    if not isinstance(day, int) or not 1 <= day <= 31:
        return f"{year:04d}-{month:02d}"
    return f"{year:04d}-{month:02d}-{day:02d}"


def fhir_patient(patient: dict[str, Any], resource_id: str | None = None) -> dict[str, Any]:
    """A FHIR R4 Patient from a token's patient snapshot (the shape `PatientProfile.to_json()` gives)."""
    resource: dict[str, Any] = {"resourceType": "Patient", "meta": {"profile": [PATIENT_PROFILE]}}
    if resource_id:
        resource["id"] = resource_id
    identifiers = []
    if patient.get("abha_number"):
        identifiers.append({
            "type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": "ABHA",
                                 "display": "Ayushman Bharat Health Account (ABHA) ID"}]},
            "system": ABHA_NUMBER_SYSTEM, "value": str(patient["abha_number"]),
        })  # fmt: skip
    if patient.get("abha_address"):
        identifiers.append({
            "type": {"coding": [{"system": ID_TYPE_SYSTEM, "code": "ABHAAddress",
                                 "display": "Ayushman Bharat Health Account (ABHA) Address"}]},
            "system": ABHA_ADDRESS_SYSTEM, "value": str(patient["abha_address"]),
        })  # fmt: skip
    if identifiers:
        resource["identifier"] = identifiers
    if patient.get("name"):
        resource["name"] = [{"use": "official", "text": str(patient["name"])}]
    if patient.get("phone"):
        resource["telecom"] = [{"system": "phone", "value": str(patient["phone"]), "use": "mobile"}]
    gender = GENDERS.get(str(patient.get("gender") or "").upper())
    if gender:
        resource["gender"] = gender
    born = birth_date(*(patient.get(f"{part}_of_birth") for part in ("year", "month", "day")))
    if born:
        resource["birthDate"] = born
    address = patient.get("address") or {}
    if isinstance(address, dict) and any(address.values()):
        entry: dict[str, Any] = {"use": "home", "country": "IN"}
        if address.get("line"):
            entry["line"] = [str(address["line"])]
        if address.get("district"):
            entry["district"] = str(address["district"])
        if address.get("state"):
            entry["state"] = str(address["state"])
        if address.get("pincode"):
            entry["postalCode"] = str(address["pincode"])
        parts = [address.get(k) for k in ("line", "district", "state", "pincode")]
        entry["text"] = ", ".join(str(p) for p in parts if p)
        resource["address"] = [entry]
    return resource


@router.get(
    "/{token_id}/fhir-patient",
    response_class=JSONResponse,
    responses={200: {"content": {"application/fhir+json": {}}, "description": "a FHIR R4 Patient"}},
)
async def token_fhir_patient(token_id: TokenId, principal: StaffDep, state: StateDep) -> JSONResponse:
    token = await state.queue.get(token_id)
    principal.require_counter(token.hip_id, token.counter)
    async with state.engine.connect() as conn:
        patient = (await token_sql.patients_for(conn, [token.id])).get(token.id)
    if not patient:
        raise NotFound("this token has no patient profile")
    body = fhir_patient(patient, resource_id=token.public_id.replace("_", "-"))
    return JSONResponse(body, media_type="application/fhir+json")
