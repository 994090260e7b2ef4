"""A counter's Scan & Share artefacts (bare QR as PNG/SVG, A4 poster as PDF/PNG) from its SQL config."""

from __future__ import annotations

from functools import lru_cache

from printer.poster import INSTRUCTIONS, counter_qr_url, poster_pdf, poster_png, qr_png, qr_svg
from token_service.config import Settings
from token_service.models import Counter, Facility

__all__ = ["FORMATS", "counter_artifact", "poster_languages", "share_url"]

# "png"/"svg" are the bare code (for print shops and slides), "pdf"/"poster.png" the A4 poster.
FORMATS = ("png", "svg", "pdf", "poster.png")
# Scripts other than English that the poster can lay out, and in which it has instructions.
LOCAL_SCRIPTS = tuple(lang for lang in INSTRUCTIONS if lang != "en")


def share_url(settings: Settings, hip_id: str, counter_code: str) -> str:
    return counter_qr_url(settings.phr_share_url, hip_id, counter_code)


def _names(names: dict[str, str] | None, english: str) -> dict[str, str]:
    out = {lang: text for lang, text in (names or {}).items() if isinstance(text, str) and text.strip()}
    out.setdefault("en", english)
    return out


def poster_languages(
    facility: Facility, facility_names: dict[str, str], counter_names: dict[str, str]
) -> list[str]:
    """The facility's languages the poster can print, then any Hindi/Gujarati name the admin entered
    (a name typed in a script is meant to be read); English is always added last by the renderer."""
    langs = [lang for lang in facility.languages or [] if lang in INSTRUCTIONS]
    for lang in LOCAL_SCRIPTS:
        if lang not in langs and (lang in facility_names or lang in counter_names):
            langs.append(lang)
    return langs


def counter_artifact(settings: Settings, facility: Facility, counter: Counter, fmt: str) -> bytes:
    """The bytes of one artefact; `fmt` is png, svg, pdf (poster) or poster.png. Pure and cached."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    url = share_url(settings, facility.hip_id, counter.code)
    if fmt == "png":
        return _bare(url, "png")
    if fmt == "svg":
        return _bare(url, "svg")
    facility_names = _names(facility.names, facility.name)
    counter_names = _names(counter.names, counter.name)
    langs = poster_languages(facility, facility_names, counter_names)
    return _poster(url, tuple(facility_names.items()), tuple(counter_names.items()), tuple(langs), fmt)


@lru_cache(maxsize=64)
def _bare(url: str, fmt: str) -> bytes:
    return qr_png(url) if fmt == "png" else qr_svg(url)


@lru_cache(maxsize=32)
def _poster(
    url: str,
    facility_names: tuple[tuple[str, str], ...],
    counter_names: tuple[tuple[str, str], ...],
    languages: tuple[str, ...],
    fmt: str,
) -> bytes:
    # Keyed on everything drawn, so an admin's rename shows at once; rendering takes a few hundred ms.
    render = poster_pdf if fmt == "pdf" else poster_png
    return render(url, dict(facility_names), dict(counter_names), list(languages))
