"""The patient profile every intake path produces, and the field normalisers they share."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypedDict

MAX_NAME_LEN = 200
MAX_ADDRESS_LINE_LEN = 500
MAX_PLACE_LEN = 100
MAX_ABHA_ADDRESS_LEN = 100

GENDERS = frozenset("MFODTU")
# Older clients and hand-made QR codes spell the gender out; map them rather than lose the field.
_GENDER_WORDS = {
    "MALE": "M",
    "FEMALE": "F",
    "OTHER": "O",
    "OTHERS": "O",
    "TRANSGENDER": "T",
    "UNDISCLOSED": "D",
    "UNKNOWN": "U",
}
_ABHA_ADDRESS_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(@[a-z0-9][a-z0-9._-]*)?$")
_PHONE_RE = re.compile(r"^\+?[0-9]{6,15}$")
_PINCODE_RE = re.compile(r"^[1-9][0-9]{5}$")
_SPACES_RE = re.compile(r"\s+")
MIN_BIRTH_YEAR = 1880


class ProfileValueError(ValueError):
    """A profile field has a value we refuse (as opposed to one we silently drop)."""


class Address(TypedDict):
    line: str | None
    district: str | None
    state: str | None
    pincode: str | None


def empty_address() -> Address:
    return {"line": None, "district": None, "state": None, "pincode": None}


@dataclass(frozen=True)
class PatientProfile:
    """What the clerk sees instead of retyping: normalised, length-checked, any script."""

    abha_number: str | None
    abha_address: str | None
    name: str
    gender: str | None
    year_of_birth: int | None
    month_of_birth: int | None
    day_of_birth: int | None
    phone: str | None
    address: Address = field(default_factory=empty_address)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what gets stored as the token's patient snapshot). Spelt out: every share
        makes one, and `dataclasses.asdict` (a recursive deep copy) cost ~2 % of a worker's CPU."""
        return {
            "abha_number": self.abha_number, "abha_address": self.abha_address, "name": self.name,
            "gender": self.gender, "year_of_birth": self.year_of_birth,
            "month_of_birth": self.month_of_birth, "day_of_birth": self.day_of_birth,
            "phone": self.phone, "address": dict(self.address),
        }  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return self.to_json()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatientProfile:
        raw_address = data.get("address") or {}
        address: Address = {
            "line": raw_address.get("line"),
            "district": raw_address.get("district"),
            "state": raw_address.get("state"),
            "pincode": raw_address.get("pincode"),
        }
        return cls(
            abha_number=data.get("abha_number"),
            abha_address=data.get("abha_address"),
            name=str(data["name"]),
            gender=data.get("gender"),
            year_of_birth=data.get("year_of_birth"),
            month_of_birth=data.get("month_of_birth"),
            day_of_birth=data.get("day_of_birth"),
            phone=data.get("phone"),
            address=address,
        )

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> PatientProfile:
        """From `to_json()`'s dict, or that dict serialised to JSON text."""
        if isinstance(data, Mapping):
            return cls.from_dict(data)
        loaded = json.loads(data)
        if not isinstance(loaded, dict):
            raise ValueError("a PatientProfile JSON must be an object")
        return cls.from_dict(loaded)


def clean_text(value: str | None, *, max_len: int, what: str) -> str | None:
    """NFC-normalise, drop control characters, collapse whitespace; too long is an error."""
    if value is None:
        return None
    # NFC so the same Devanagari name typed on two phones compares equal; ZWJ/ZWNJ (format
    # characters, not controls) are kept because Indic spellings depend on them.
    text = unicodedata.normalize("NFC", value)
    text = "".join(
        " " if ch.isspace() else ch for ch in text if ch.isspace() or unicodedata.category(ch) != "Cc"
    )
    text = _SPACES_RE.sub(" ", text).strip()
    if not text:
        return None
    if len(text) > max_len:
        raise ProfileValueError(f"{what} is longer than {max_len} characters")
    return text


def clean_name(value: str | None, *, what: str = "name") -> str:
    name = clean_text(value, max_len=MAX_NAME_LEN, what=what)
    if name is None:
        raise ProfileValueError(f"{what} is required")
    return name


def clean_gender(value: str | None) -> str | None:
    """One of M F O D T U; an unrecognised value is dropped, not worth refusing a patient over."""
    if value is None:
        return None
    text = value.strip().upper()
    if text in GENDERS:
        return text
    return _GENDER_WORDS.get(text)


def clean_abha_address(value: str | None) -> str | None:
    if value is None:
        return None
    # ABHA addresses are case-insensitive and ABDM stores them lower-case; lowering here keeps
    # the re-scan check (same address, same counter, same day) from missing a match.
    text = value.strip().lower()
    if not text:
        return None
    if len(text) > MAX_ABHA_ADDRESS_LEN or not _ABHA_ADDRESS_RE.match(text):
        raise ProfileValueError("abha address is not a valid ABHA address")
    return text


def clean_abha_number(value: str | None) -> str | None:
    """14 digits, written back as 91-1234-5678-9012 whatever separators arrived."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    digits = re.sub(r"[\s-]", "", text)
    if len(digits) != 14 or not digits.isascii() or not digits.isdigit():
        raise ProfileValueError("abha number must have 14 digits")
    return f"{digits[:2]}-{digits[2:6]}-{digits[6:10]}-{digits[10:]}"


def clean_phone(value: str | None) -> str | None:
    """Digits only (leading + kept); anything else (masked, junk) is dropped, the profile stays usable."""
    if value is None:
        return None
    text = re.sub(r"[\s().-]", "", value)
    if not text.isascii() or not _PHONE_RE.match(text):
        return None
    if text.startswith("+91") and len(text) == 13:
        return text[3:]
    if len(text) == 12 and text.startswith("91"):
        return text[2:]
    return text


def clean_pincode(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip().replace(" ", "")
    return text if text.isascii() and _PINCODE_RE.match(text) else None


def clean_address(line: str | None, district: str | None, state: str | None, pincode: str | None) -> Address:
    return {
        "line": clean_text(line, max_len=MAX_ADDRESS_LINE_LEN, what="address line"),
        "district": clean_text(district, max_len=MAX_PLACE_LEN, what="district"),
        "state": clean_text(state, max_len=MAX_PLACE_LEN, what="state"),
        "pincode": clean_pincode(pincode),
    }


def _as_int(value: str | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 4:
        return None
    return int(text)


def clean_birth(
    year: str | int | None, month: str | int | None, day: str | int | None
) -> tuple[int | None, int | None, int | None]:
    """Partial dates are normal (year only); 0 or out-of-range parts mean "unknown", not an error."""
    y, m, d = _as_int(year), _as_int(month), _as_int(day)
    if y is not None and not MIN_BIRTH_YEAR <= y <= date.today().year + 1:
        y = None
    if m is not None and not 1 <= m <= 12:
        m = None
    if d is not None and not 1 <= d <= 31:
        d = None
    if m is None:
        # A day without its month says nothing.
        d = None
    return y, m, d
