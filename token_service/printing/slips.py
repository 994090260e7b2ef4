"""The slip a print job carries, built from the token and the facility's configured names."""

from __future__ import annotations

from datetime import datetime

from printer.slip_data import LANGUAGES, SlipData
from token_service.clock import from_ms
from token_service.directory import FacilityConfig
from token_service.queue.service import Token


def status_url(public_base_url: str, public_id: str) -> str:
    return public_base_url.rstrip("/") + "/t/" + public_id


def slip_languages(facility_languages: list[str], preferred: str | None) -> list[str]:
    """The patient's chosen language first, then the facility's; English is always on the slip."""
    chosen: list[str] = []
    for lang in [preferred or "", *facility_languages, "en"]:
        if lang in LANGUAGES and lang not in chosen:
            chosen.append(lang)
    return chosen


def build_slip(cfg: FacilityConfig, token: Token, public_base_url: str, language: str | None) -> SlipData:
    facility = cfg.facility
    counter = cfg.counters.get(token.counter)
    counter_names = {"en": counter.name, **(counter.names or {})} if counter else {"en": token.counter}
    issued_at: datetime = from_ms(token.issued_ms)  # type: ignore[assignment]
    return SlipData(
        facility_names={"en": facility.name, **{k: v for k, v in (facility.names or {}).items() if v}},
        counter_names={k: v for k, v in counter_names.items() if v},
        token_label=token.label,
        priority=token.priority.value,
        issued_at=issued_at,
        timezone=facility.timezone,
        languages=slip_languages(list(facility.languages or []), language),
        status_url=status_url(public_base_url, token.public_id),
        source=token.source.value,
    )
