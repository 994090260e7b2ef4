"""Inbound share parsing: every observed variant normalises right; garbage only ever gives ShareParseError."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from token_service.abdm.abha_card import AbhaCardError, parse_abha_card, parse_dob
from token_service.abdm.schemas import PatientProfile, ShareParseError, ShareRequest, parse_share

V3_HEADERS = {
    "REQUEST-ID": "5f7a535d-a3fd-416b-b069-c97d021fbacd",
    "TIMESTAMP": "2024-05-01T10:00:00.123Z",
    "X-HIP-ID": "IN0710000123",
}

V3_BODY: dict[str, Any] = {
    "intent": "PROFILE_SHARE",
    "metaData": {
        "hipId": "IN0710000123",
        "context": "OPD1",
        "hprId": None,
        "latitude": "28.5672",
        "longitude": "77.2100",
    },
    "profile": {
        "patient": {
            "abhaNumber": "91-1234-5678-9012",
            "abhaAddress": "ramesh.k1979@abdm",
            "name": "Ramesh Kumar",
            "gender": "M",
            "dayOfBirth": "14",
            "monthOfBirth": "8",
            "yearOfBirth": "1979",
            "address": {
                "line": "H No 12, Gali 4",
                "district": "South Delhi",
                "state": "Delhi",
                "pincode": "110029",
            },
            "phoneNumber": "9876543210",
        }
    },
}

V1_BODY: dict[str, Any] = {
    "requestId": "0f2f8b2e-8c5e-4a55-9d6f-3a2b1c0d9e8f",
    "timestamp": "2024-05-01T10:00:00.123456",
    "intent": {"type": "PROFILE_SHARE"},
    "location": {"latitude": "28.5672", "longitude": "77.2100"},
    "profile": {
        "hipCode": "OPD1",
        "patient": {
            "healthId": "ramesh.k1979@sbx",
            "healthIdNumber": "91-1234-5678-9012",
            "name": "Ramesh Kumar",
            "gender": "M",
            "address": {"line": "H No 12", "district": "South Delhi", "state": "Delhi", "pincode": "110029"},
            "yearOfBirth": 1979,
            "monthOfBirth": 8,
            "dayOfBirth": 14,
            "identifiers": [{"type": "MOBILE", "value": "9876543210"}],
        },
    },
}


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of body with `a.b.c` set to value (or removed when value is ...)."""
    out = copy.deepcopy(body)
    *parents, leaf = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return out


def _v3(body: dict[str, Any], headers: dict[str, str] | None = None) -> ShareRequest:
    return parse_share("v3", json.dumps(body, ensure_ascii=False).encode(), headers or V3_HEADERS)


def _v1(body: dict[str, Any], version: str = "v1") -> ShareRequest:
    return parse_share(version, json.dumps(body, ensure_ascii=False).encode(), {"X-HIP-ID": "IN0710000123"})  # type: ignore[arg-type]


def test_v3_canonical_body() -> None:
    share = _v3(V3_BODY)
    assert share == ShareRequest(
        version="v3",
        request_id="5f7a535d-a3fd-416b-b069-c97d021fbacd",
        timestamp=datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC),
        hip_id="IN0710000123",
        counter_code="OPD1",
        intent="PROFILE_SHARE",
        profile=PatientProfile(
            abha_number="91-1234-5678-9012",
            abha_address="ramesh.k1979@abdm",
            name="Ramesh Kumar",
            gender="M",
            year_of_birth=1979,
            month_of_birth=8,
            day_of_birth=14,
            phone="9876543210",
            address={
                "line": "H No 12, Gali 4",
                "district": "South Delhi",
                "state": "Delhi",
                "pincode": "110029",
            },
        ),
    )


V3_VARIANTS: list[tuple[str, str, Any, str, Any]] = [
    # (id, path to change, new value, ShareRequest/profile attribute to check, expected)
    ("abha-number-null", "profile.patient.abhaNumber", None, "profile.abha_number", None),
    (
        "abha-number-digits",
        "profile.patient.abhaNumber",
        "91123456789012",
        "profile.abha_number",
        "91-1234-5678-9012",
    ),
    ("abha-number-missing", "profile.patient.abhaNumber", ..., "profile.abha_number", None),
    ("hpr-id-missing", "metaData.hprId", ..., "counter_code", "OPD1"),
    ("hpr-id-set", "metaData.hprId", "71-1234-5678-9012", "counter_code", "OPD1"),
    ("lat-number", "metaData.latitude", 28.5672, "counter_code", "OPD1"),
    ("long-number", "metaData.longitude", 77, "counter_code", "OPD1"),
    ("lat-null", "metaData.latitude", None, "counter_code", "OPD1"),
    ("year-number", "profile.patient.yearOfBirth", 1979, "profile.year_of_birth", 1979),
    ("month-number", "profile.patient.monthOfBirth", 8, "profile.month_of_birth", 8),
    ("day-number", "profile.patient.dayOfBirth", 14, "profile.day_of_birth", 14),
    ("month-zero-padded", "profile.patient.monthOfBirth", "08", "profile.month_of_birth", 8),
    ("day-missing", "profile.patient.dayOfBirth", ..., "profile.day_of_birth", None),
    ("month-missing-drops-day", "profile.patient.monthOfBirth", ..., "profile.day_of_birth", None),
    ("month-null", "profile.patient.monthOfBirth", None, "profile.month_of_birth", None),
    ("month-zero-unknown", "profile.patient.monthOfBirth", "0", "profile.month_of_birth", None),
    ("year-empty", "profile.patient.yearOfBirth", "", "profile.year_of_birth", None),
    (
        "pinCode-spelling",
        "profile.patient.address",
        {"line": "x", "pinCode": "110029"},
        "profile.address.pincode",
        "110029",
    ),
    ("pincode-number", "profile.patient.address.pincode", 110029, "profile.address.pincode", "110029"),
    ("pincode-junk-dropped", "profile.patient.address.pincode", "abc", "profile.address.pincode", None),
    ("address-missing", "profile.patient.address", ..., "profile.address.line", None),
    ("address-null", "profile.patient.address", None, "profile.address.state", None),
    ("devanagari-name", "profile.patient.name", "रमेश कुमार", "profile.name", "रमेश कुमार"),
    ("gujarati-name", "profile.patient.name", "રમેશ કુમાર", "profile.name", "રમેશ કુમાર"),
    ("tamil-name", "profile.patient.name", "ரமேஷ் குமார்", "profile.name", "ரமேஷ் குமார்"),
    ("name-whitespace", "profile.patient.name", "  Ramesh \n Kumar ", "profile.name", "Ramesh Kumar"),
    ("name-200-chars", "profile.patient.name", "अ" * 200, "profile.name", "अ" * 200),
    ("gender-lower", "profile.patient.gender", "f", "profile.gender", "F"),
    ("gender-null", "profile.patient.gender", None, "profile.gender", None),
    ("gender-word", "profile.patient.gender", "FEMALE", "profile.gender", "F"),
    ("gender-unknown-dropped", "profile.patient.gender", "X", "profile.gender", None),
    ("phone-missing", "profile.patient.phoneNumber", ..., "profile.phone", None),
    ("phone-plus91", "profile.patient.phoneNumber", "+91-98765 43210", "profile.phone", "9876543210"),
    ("phone-masked-dropped", "profile.patient.phoneNumber", "******3210", "profile.phone", None),
    (
        "abha-address-upper",
        "profile.patient.abhaAddress",
        "Ramesh.K1979@ABDM",
        "profile.abha_address",
        "ramesh.k1979@abdm",
    ),
    (
        "abha-address-sbx",
        "profile.patient.abhaAddress",
        "ramesh_k@sbx",
        "profile.abha_address",
        "ramesh_k@sbx",
    ),
    ("hip-id-missing", "metaData.hipId", ..., "hip_id", None),
    ("counter-lower", "metaData.context", "opd2", "counter_code", "opd2"),
    ("counter-20", "metaData.context", "A" * 20, "counter_code", "A" * 20),
    ("intent-lower", "intent", "profile_share", "intent", "PROFILE_SHARE"),
    ("extra-fields-ignored", "profile.patient.somethingNew", {"x": 1}, "profile.name", "Ramesh Kumar"),
]


def _attr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


@pytest.mark.parametrize(
    ("path", "value", "attr", "expected"), [v[1:] for v in V3_VARIANTS], ids=[v[0] for v in V3_VARIANTS]
)
def test_v3_variants(path: str, value: Any, attr: str, expected: Any) -> None:
    assert _attr(_v3(_set(V3_BODY, path, value)), attr) == expected


@pytest.mark.parametrize("gender", list("MFODTU"))
def test_v3_every_gender(gender: str) -> None:
    assert _v3(_set(V3_BODY, "profile.patient.gender", gender)).profile.gender == gender


def test_v3_address_only_user_numbers_everywhere() -> None:
    body = _set(V3_BODY, "profile.patient.abhaNumber", None)
    for path, value in [
        ("metaData.latitude", 28.5672),
        ("metaData.longitude", 77.21),
        ("profile.patient.yearOfBirth", 1979),
        ("profile.patient.monthOfBirth", 8),
        ("profile.patient.dayOfBirth", 14),
        ("profile.patient.address", {"line": "x", "district": "d", "state": "s", "pinCode": 110029}),
    ]:
        body = _set(body, path, value)
    share = _v3(body)
    assert share.profile.abha_number is None
    assert (share.profile.year_of_birth, share.profile.month_of_birth, share.profile.day_of_birth) == (
        1979,
        8,
        14,
    )
    assert share.profile.address["pincode"] == "110029"


@pytest.mark.parametrize("header_case", ["REQUEST-ID", "request-id", "Request-Id"])
def test_v3_request_id_header_any_case(header_case: str) -> None:
    share = _v3(V3_BODY, {header_case: "abc-123", "timestamp": "2024-05-01T10:00:00Z"})
    assert share.request_id == "abc-123"
    assert share.timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_v3_timestamp_missing_or_odd_is_none() -> None:
    assert _v3(V3_BODY, {"REQUEST-ID": "r1"}).timestamp is None
    assert _v3(V3_BODY, {"REQUEST-ID": "r1", "TIMESTAMP": "yesterday"}).timestamp is None


def test_v1_canonical_body() -> None:
    share = _v1(V1_BODY)
    assert share.version == "v1"
    assert share.request_id == V1_BODY["requestId"]
    assert share.timestamp == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert share.hip_id is None
    assert share.counter_code == "OPD1"
    assert share.intent == "PROFILE_SHARE"
    assert share.profile.abha_address == "ramesh.k1979@sbx"
    assert share.profile.abha_number == "91-1234-5678-9012"
    assert share.profile.phone == "9876543210"
    assert (share.profile.year_of_birth, share.profile.month_of_birth, share.profile.day_of_birth) == (
        1979,
        8,
        14,
    )


def test_v05_body_without_intent_and_location() -> None:
    body = _set(_set(V1_BODY, "intent", ...), "location", ...)
    share = _v1(body, "v0.5")
    assert share.version == "v1"
    assert share.intent == "PROFILE_SHARE"
    assert share.counter_code == "OPD1"


V1_VARIANTS: list[tuple[str, str, Any, str, Any]] = [
    ("health-id-number-null", "profile.patient.healthIdNumber", None, "profile.abha_number", None),
    ("birth-strings", "profile.patient.yearOfBirth", "1979", "profile.year_of_birth", 1979),
    ("day-missing", "profile.patient.dayOfBirth", ..., "profile.day_of_birth", None),
    ("no-identifiers", "profile.patient.identifiers", ..., "profile.phone", None),
    ("identifiers-null", "profile.patient.identifiers", None, "profile.phone", None),
    (
        "identifiers-mobile-second",
        "profile.patient.identifiers",
        [{"type": "EMAIL", "value": "r@example.org"}, {"type": "mobile", "value": 9876543210}],
        "profile.phone",
        "9876543210",
    ),
    ("pinCode", "profile.patient.address", {"pinCode": "110029"}, "profile.address.pincode", "110029"),
    ("devanagari", "profile.patient.name", "रमेश", "profile.name", "रमेश"),
    ("intent-string", "intent", "PROFILE_SHARE", "intent", "PROFILE_SHARE"),
    ("location-numbers", "location", {"latitude": 28.5, "longitude": 77.2}, "counter_code", "OPD1"),
    (
        "timestamp-z",
        "timestamp",
        "2024-05-01T10:00:00.123Z",
        "timestamp",
        datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC),
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "attr", "expected"), [v[1:] for v in V1_VARIANTS], ids=[v[0] for v in V1_VARIANTS]
)
def test_v1_variants(path: str, value: Any, attr: str, expected: Any) -> None:
    assert _attr(_v1(_set(V1_BODY, path, value)), attr) == expected


BAD_V3: list[tuple[str, bytes, str]] = [
    ("not-json", b"not json", "invalid_json"),
    ("empty", b"", "invalid_json"),
    ("truncated", b'{"intent": ', "invalid_json"),
    ("nan", b'{"intent": NaN}', "invalid_json"),
    ("infinity", b'{"intent": -Infinity}', "invalid_json"),
    ("overflow", b'{"intent": 1e400}', "invalid_json"),
    ("lone-surrogate", b'{"intent": "\\ud800"}', "invalid_json"),
    ("utf16", '{"intent": "PROFILE_SHARE"}'.encode("utf-16"), "invalid_json"),
    ("bad-utf8", b'{"intent": "\xff"}', "invalid_json"),
    ("deep", b"[" * 30_000 + b"]" * 30_000, "invalid_json"),
    ("array", b"[]", "invalid_body"),
    ("string", b'"PROFILE_SHARE"', "invalid_body"),
    ("empty-object", b"{}", "invalid_body"),
    ("too-large", b'{"x": "' + b"a" * 70_000 + b'"}', "body_too_large"),
]


@pytest.mark.parametrize(("body", "code"), [b[1:] for b in BAD_V3], ids=[b[0] for b in BAD_V3])
def test_bad_bytes(body: bytes, code: str) -> None:
    with pytest.raises(ShareParseError) as info:
        parse_share("v3", body, V3_HEADERS)
    assert info.value.code == code


BAD_V3_FIELDS: list[tuple[str, str, Any, str]] = [
    ("no-profile", "profile", ..., "invalid_body"),
    ("no-patient", "profile.patient", ..., "invalid_body"),
    ("no-metadata", "metaData", ..., "invalid_body"),
    ("name-missing", "profile.patient.name", ..., "invalid_body"),
    ("name-blank", "profile.patient.name", "   ", "invalid_body"),
    ("name-201", "profile.patient.name", "a" * 201, "invalid_body"),
    ("name-object", "profile.patient.name", {"first": "R"}, "invalid_body"),
    ("name-bool", "profile.patient.name", True, "invalid_body"),
    ("abha-address-missing", "profile.patient.abhaAddress", ..., "invalid_body"),
    ("abha-address-spaces", "profile.patient.abhaAddress", "ramesh k@abdm", "invalid_body"),
    ("abha-number-short", "profile.patient.abhaNumber", "91-1234-5678", "invalid_body"),
    ("year-float", "profile.patient.yearOfBirth", 1979.5, "invalid_body"),
    ("year-list", "profile.patient.yearOfBirth", [1979], "invalid_body"),
    ("address-list", "profile.patient.address", ["x"], "invalid_body"),
    ("address-line-long", "profile.patient.address.line", "x" * 501, "invalid_body"),
    ("intent-record", "intent", "RECORD_SHARE", "unsupported_intent"),
    ("intent-payment", "intent", "PAYMENT_SHARE", "unsupported_intent"),
    ("intent-missing", "intent", ..., "unsupported_intent"),
    ("counter-missing", "metaData.context", ..., "invalid_counter_code"),
    ("counter-empty", "metaData.context", "", "invalid_counter_code"),
    ("counter-dash", "metaData.context", "OPD-1", "invalid_counter_code"),
    ("counter-21", "metaData.context", "A" * 21, "invalid_counter_code"),
    ("counter-devanagari", "metaData.context", "ओपीडी", "invalid_counter_code"),
    ("hip-id-spaces", "metaData.hipId", "IN 07", "invalid_hip_id"),
]


@pytest.mark.parametrize(
    ("path", "value", "code"), [b[1:] for b in BAD_V3_FIELDS], ids=[b[0] for b in BAD_V3_FIELDS]
)
def test_bad_v3_fields(path: str, value: Any, code: str) -> None:
    with pytest.raises(ShareParseError) as info:
        _v3(_set(V3_BODY, path, value))
    assert info.value.code == code
    assert info.value.message
    assert info.value.to_dict() == {"error": code, "detail": info.value.message}


def test_v3_request_id_header_required_and_sane() -> None:
    with pytest.raises(ShareParseError) as info:
        _v3(V3_BODY, {"TIMESTAMP": "2024-05-01T10:00:00Z"})
    assert info.value.code == "missing_request_id"
    with pytest.raises(ShareParseError) as info:
        _v3(V3_BODY, {"REQUEST-ID": "has spaces in it"})
    assert info.value.code == "invalid_request_id"


@pytest.mark.parametrize(
    ("path", "value", "code"),
    [
        ("requestId", ..., "missing_request_id"),
        ("requestId", "", "missing_request_id"),
        ("requestId", "x" * 200, "invalid_request_id"),
        ("intent", {"type": "RECORD_SHARE"}, "unsupported_intent"),
        ("profile.hipCode", ..., "invalid_counter_code"),
        ("profile.patient.healthId", None, "invalid_body"),
        ("profile.patient.identifiers", "9876543210", "invalid_body"),
        ("profile", ..., "invalid_body"),
    ],
)
def test_bad_v1_fields(path: str, value: Any, code: str) -> None:
    with pytest.raises(ShareParseError) as info:
        _v1(_set(V1_BODY, path, value))
    assert info.value.code == code


def test_unsupported_version() -> None:
    with pytest.raises(ShareParseError) as info:
        parse_share("v2", b"{}", {})  # type: ignore[arg-type]
    assert info.value.code == "unsupported_version"


def test_round_trips() -> None:
    share = _v3(_set(V3_BODY, "profile.patient.name", "रमेश कुमार"))
    assert ShareRequest.from_json(share.to_json()) == share
    assert PatientProfile.from_json(share.profile.to_json()) == share.profile
    assert PatientProfile.from_json(share.profile.to_dict()) == share.profile
    assert share.profile.to_json()["name"] == "रमेश कुमार"
    text = json.dumps(share.to_json(), ensure_ascii=False)
    assert ShareRequest.from_json(text) == share
    assert PatientProfile.from_json(json.dumps(share.profile.to_json()).encode()) == share.profile
    # Every field, the address as a copy of its own (the snapshot stored must not alias the profile).
    snapshot = share.profile.to_json()
    assert snapshot == dataclasses.asdict(share.profile)
    snapshot["address"]["line"] = "changed"
    assert share.profile.address["line"] != "changed"


# ---- property tests: garbage in, ShareParseError out ----

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    return out


def _mutate(body: dict[str, Any], path: tuple[str, ...], value: Any, delete: bool) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _parses_or_refuses(version: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        result = parse_share(version, body, headers)  # type: ignore[arg-type]
    except ShareParseError as exc:
        assert exc.code and exc.message
    else:
        assert isinstance(result, ShareRequest)
        assert 1 <= len(result.counter_code) <= 20 and len(result.profile.name) <= 200


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from(["v3", "v1", "v0.5"]), body=st.binary(max_size=300))
def test_random_bytes_only_share_parse_error(version: str, body: bytes) -> None:
    _parses_or_refuses(version, body, V3_HEADERS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from(["v3", "v1", "v0.5"]), value=json_values)
def test_random_json_only_share_parse_error(version: str, value: Any) -> None:
    _parses_or_refuses(version, json.dumps(value).encode(), V3_HEADERS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), version=st.sampled_from(["v3", "v1"]), mutations=st.integers(min_value=1, max_value=4))
def test_mutated_valid_bodies_only_share_parse_error(
    data: st.DataObject, version: str, mutations: int
) -> None:
    body = V3_BODY if version == "v3" else V1_BODY
    for _ in range(mutations):
        paths = _paths(body)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        body = _mutate(body, path, data.draw(json_values), data.draw(st.booleans()))
    headers = data.draw(st.sampled_from([V3_HEADERS, {}, {"request-id": "x y"}, {"REQUEST-ID": "ok-1"}]))
    _parses_or_refuses(version, json.dumps(body).encode(), headers)


# ---- the patient's own ABHA card / app QR ----

CARD_QR = {
    "hidn": "91-1234-5678-9012",
    "hid": "ramesh.k1979@abdm",
    "name": "Ramesh Kumar",
    "gender": "M",
    "statelgd": "7",
    "distlgd": "77",
    "dob": "14/8/1979",
    "state name": "DELHI",
    "district_name": "SOUTH DELHI",
    "mobile": "9876543210",
    "address": "H No 12, Gali 4, Lajpat Nagar",
}
APP_QR = {
    "hidn": "91-1234-5678-9012",
    "phr": "ramesh.k1979@abdm",
    "name": "रमेश कुमार",
    "gender": "M",
    "statelgd": "7",
    "distlgd": "77",
    "dob": "14-8-1979",
    "address": "H No 12",
}


def test_abha_card_variant() -> None:
    profile = parse_abha_card(json.dumps(CARD_QR))
    assert profile == PatientProfile(
        abha_number="91-1234-5678-9012",
        abha_address="ramesh.k1979@abdm",
        name="Ramesh Kumar",
        gender="M",
        year_of_birth=1979,
        month_of_birth=8,
        day_of_birth=14,
        phone="9876543210",
        address={
            "line": "H No 12, Gali 4, Lajpat Nagar",
            "district": "SOUTH DELHI",
            "state": "DELHI",
            "pincode": None,
        },
    )


def test_abha_app_variant() -> None:
    profile = parse_abha_card(json.dumps(APP_QR, ensure_ascii=False).encode())
    assert profile.abha_address == "ramesh.k1979@abdm"
    assert profile.name == "रमेश कुमार"
    assert (profile.year_of_birth, profile.month_of_birth, profile.day_of_birth) == (1979, 8, 14)
    assert profile.phone is None
    assert profile.address["line"] == "H No 12"


@pytest.mark.parametrize(
    ("dob", "expected"),
    [
        ("14/8/1979", (1979, 8, 14)),
        ("14-8-1979", (1979, 8, 14)),
        ("01/01/2001", (2001, 1, 1)),
        ("1979-08-14", (1979, 8, 14)),
        ("1979", (1979, None, None)),
        ("32/8/1979", (1979, 8, None)),
        ("14/13/1979", (1979, None, None)),
        ("yesterday", (None, None, None)),
        ("", (None, None, None)),
    ],
)
def test_abha_card_dob_forms(dob: str, expected: tuple[int | None, ...]) -> None:
    assert parse_dob(dob) == expected


def test_abha_card_number_only_is_enough() -> None:
    qr = {k: v for k, v in CARD_QR.items() if k != "hid"}
    profile = parse_abha_card(qr)
    assert profile.abha_address is None and profile.abha_number == "91-1234-5678-9012"


@pytest.mark.parametrize(
    "raw",
    [
        "91-1234-5678-9012",
        "https://phrsbx.abdm.gov.in/share-profile?hip-id=X&counter-id=Y",
        "[]",
        json.dumps({"name": "No Ids"}),
        json.dumps({**CARD_QR, "name": ""}),
        json.dumps({**CARD_QR, "hidn": "12"}),
        json.dumps({**CARD_QR, "name": {"x": 1}}),
        "{" * 20_000,
    ],
)
def test_abha_card_rejects(raw: str) -> None:
    with pytest.raises(AbhaCardError):
        parse_abha_card(raw)


@settings(max_examples=200, deadline=None)
@given(value=json_values | st.dictionaries(st.sampled_from(sorted(CARD_QR)), json_values, max_size=8))
def test_abha_card_garbage_only_abha_card_error(value: Any) -> None:
    try:
        parse_abha_card(json.dumps(value))
    except AbhaCardError:
        pass
