"""Counter QR artefacts from SQL rows: the code decodes to exactly the share URL; posters render."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from token_service.config import Settings
from token_service.models import Counter, Facility
from token_service.posters import counter_artifact, poster_languages

FACILITY = Facility(hip_id="IN0710000123", name="District Hospital Patna",
                    names={"en": "District Hospital Patna", "hi": "जिला अस्पताल पटना"}, languages=["hi", "en"])  # fmt: skip
COUNTER = Counter(
    hip_id="IN0710000123", code="OPD1", name="General OPD", names={"en": "General OPD", "gu": "જનરલ ઓપીડી"}
)
URL = "https://phrsbx.abdm.gov.in/share-profile?hip-id=IN0710000123&counter-id=OPD1"


def _decode(png: bytes) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


def test_bare_png_decodes_to_share_url(tmp_path: Path) -> None:
    data = counter_artifact(Settings(data_dir=tmp_path), FACILITY, COUNTER, "png")
    assert _decode(data) == [URL]


def test_share_base_is_configurable(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, phr_share_url="https://phr.abdm.gov.in/share-profile")
    assert _decode(counter_artifact(s, FACILITY, COUNTER, "png")) == [URL.replace("phrsbx", "phr")]


def test_svg_pdf_and_poster_png(tmp_path: Path, artifacts: Path) -> None:
    s = Settings(data_dir=tmp_path)
    svg = counter_artifact(s, FACILITY, COUNTER, "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
    assert counter_artifact(s, FACILITY, COUNTER, "pdf").startswith(b"%PDF-")
    poster = counter_artifact(s, FACILITY, COUNTER, "poster.png")
    (artifacts / "counter_poster_unit.png").write_bytes(poster)
    assert Image.open(io.BytesIO(poster)).size == (1240, 1754)
    assert _decode(poster) == [URL]


def test_languages_follow_facility_and_names() -> None:
    assert poster_languages(FACILITY, dict(FACILITY.names), dict(COUNTER.names)) == [
        "hi",
        "en",
        "gu",
    ]  # the renderer puts English last
    with pytest.raises(ValueError):
        counter_artifact(Settings(), FACILITY, COUNTER, "jpeg")
