"""Counter QR poster: URL building, bare PNG/SVG codes, the A4 poster and its PDF; every QR decodes."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image

from printer.poster import (
    POSTER_SIZE,
    counter_qr_url,
    poster_pdf,
    poster_png,
    qr_png,
    qr_svg,
    render_poster,
)

SHARE_BASE = "https://phrsbx.abdm.gov.in/share-profile"
URL = f"{SHARE_BASE}?hip-id=IN0710000123&counter-id=OPD1"
FACILITY = {"en": "District Hospital Patna", "hi": "जिला अस्पताल पटना", "gu": "જિલ્લા હોસ્પિટલ પટના"}
COUNTER = {"en": "General OPD", "hi": "सामान्य ओपीडी", "gu": "સામાન્ય ઓપીડી"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def decoded(image: Image.Image) -> list[str]:
    return [
        r.text
        for r in zxingcpp.read_barcodes(image.convert("L"))
        if r.format == zxingcpp.BarcodeFormat.QRCode
    ]


def test_counter_qr_url() -> None:
    assert counter_qr_url(SHARE_BASE, "IN0710000123", "OPD1") == URL


def test_counter_qr_url_encodes_its_parameters() -> None:
    url = counter_qr_url(SHARE_BASE, "IN07 10&x", "OPD/1=2")
    assert url == f"{SHARE_BASE}?hip-id=IN07+10%26x&counter-id=OPD%2F1%3D2"
    assert counter_qr_url(f"{SHARE_BASE}?lang=hi", "H", "C") == f"{SHARE_BASE}?lang=hi&hip-id=H&counter-id=C"
    with pytest.raises(ValueError):
        counter_qr_url(SHARE_BASE, "", "OPD1")


def test_qr_png_decodes() -> None:
    with Image.open(io.BytesIO(qr_png(URL))) as image:
        assert decoded(image) == [URL]


def test_qr_svg_is_a_standalone_path_svg() -> None:
    svg = qr_svg(URL)
    assert svg.startswith(b"<?xml")
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    paths = root.findall("{http://www.w3.org/2000/svg}path")
    assert len(paths) == 1 and paths[0].get("d")


def test_poster_is_a4_at_150_dpi_and_its_qr_decodes() -> None:
    image = render_poster(URL, FACILITY, COUNTER, ["hi", "gu", "en"])
    assert image.size == POSTER_SIZE == (1240, 1754)
    assert decoded(image) == [URL]
    ARTIFACTS.mkdir(exist_ok=True)
    image.save(ARTIFACTS / "poster_OPD1.png")


@pytest.mark.parametrize("languages", [["en"], ["gu", "en"], ["hi"]])
def test_poster_with_fewer_languages_still_decodes(languages: list[str]) -> None:
    assert decoded(render_poster(URL, {"en": "CHC Anand"}, {"en": "OPD"}, languages)) == [URL]


def test_poster_png_bytes_carry_dpi() -> None:
    with Image.open(io.BytesIO(poster_png(URL, FACILITY, COUNTER, ["hi", "en"]))) as image:
        assert image.size == POSTER_SIZE
        assert tuple(round(v) for v in image.info["dpi"]) == (150, 150)
        assert decoded(image) == [URL]


def test_poster_pdf_is_one_a4_page_and_reproducible() -> None:
    pdf = poster_pdf(URL, FACILITY, COUNTER, ["gu", "en"])
    assert pdf.startswith(b"%PDF-")
    assert pdf.count(b"/Type /Page\n") == 1
    box = re.search(rb"/MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", pdf)
    assert box is not None
    # A4 is 595.28 x 841.89 pt; 1240x1754 px at 150 dpi is within half a point of it.
    assert abs(float(box[1]) - 595.28) < 0.5 and abs(float(box[2]) - 841.89) < 0.5
    assert poster_pdf(URL, FACILITY, COUNTER, ["gu", "en"]) == pdf
