"""Slip rendering: golden pixels for 58/80 mm, Indic shaping, QR round trip, SlipData validation and JSON."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zxingcpp
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageFont

from printer import fonts
from printer.escpos_encode import encode_slip
from printer.slip import PRIORITIES, SlipData, format_issued_at, render_slip

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "printer"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CONJUNCTS = "क्ष श्री ક્ષ"


def golden_data() -> SlipData:
    return SlipData.from_json(json.loads((GOLDEN / "slip_data.json").read_text(encoding="utf-8")))


def assert_matches_golden(image: Image.Image, name: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        image.save(path)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review the PNG"
    with Image.open(path) as ref:
        reference = ref.convert(image.mode)
    assert reference.size == image.size, f"{name}: size {image.size} != golden {reference.size}"
    diff = ImageChops.difference(reference.convert("L"), image.convert("L")).getbbox()
    assert diff is None, f"{name}: pixels differ in box {diff}; UPDATE_GOLDEN=1 regenerates after review"


@pytest.mark.parametrize(("width", "name"), [(576, "slip_80mm.png"), (384, "slip_58mm.png")])
def test_slip_matches_golden(width: int, name: str) -> None:
    image = render_slip(golden_data(), width)
    assert image.mode == "1"
    assert image.width == width
    assert_matches_golden(image, name)


@pytest.mark.parametrize("width", [384, 576])
def test_nothing_touches_the_paper_edges(width: int) -> None:
    # A thermal head has no printable border to spare: ink in the outer 8 dots means something was cut off.
    data = dataclasses.replace(
        golden_data(),
        facility_names={
            "en": "Government Multi Speciality District Headquarters Hospital and Medical College Patna",
            "hi": "राजकीय बहु-विशेषज्ञता जिला मुख्यालय अस्पताल एवं चिकित्सा महाविद्यालय पटना",
            "gu": "સરકારી મલ્ટી સ્પેશિયાલિટી જિલ્લા મુખ્ય મથક હોસ્પિટલ અને મેડિકલ કોલેજ પટના",
        },
        token_label="OPD-1234",
        footer="Carry your ABHA card and previous prescriptions; the pharmacy is on the ground floor.",
    )
    image = render_slip(data, width)
    inked = ImageChops.invert(image.convert("L"))
    for box in [(0, 0, 8, image.height), (width - 8, 0, width, image.height), (0, 0, width, 4)]:
        assert inked.crop(box).getbbox() is None, f"ink at paper edge {box}"
    assert inked.crop((0, image.height - 4, width, image.height)).getbbox() is None


def test_render_is_deterministic() -> None:
    data = golden_data()
    first = render_slip(data).tobytes()
    fonts.text_mask.cache_clear()
    fonts.line_box.cache_clear()
    assert render_slip(SlipData.from_json(data.to_json())).tobytes() == first


@pytest.mark.parametrize("width", [384, 576])
def test_slip_qr_decodes_to_status_url(width: int) -> None:
    data = golden_data()
    results = zxingcpp.read_barcodes(render_slip(data, width).convert("L"))
    assert [(r.format, r.text) for r in results] == [(zxingcpp.BarcodeFormat.QRCode, data.status_url)]


def test_conjuncts_are_shaped_by_raqm() -> None:
    # BASIC layout draws क्ष as क + virama + ष side by side; RAQM (HarfBuzz) forms the conjunct glyph.
    for word, script in [("क्ष", "devanagari"), ("श्री", "devanagari"), ("ક્ષ", "gujarati")]:
        path = str(fonts.font_path(script))
        raqm = ImageFont.truetype(path, 48, layout_engine=ImageFont.Layout.RAQM)
        basic = ImageFont.truetype(path, 48, layout_engine=ImageFont.Layout.BASIC)
        assert fonts.font(script, 48).layout_engine == ImageFont.Layout.RAQM
        assert bytes(raqm.getmask(word)) != bytes(basic.getmask(word)), word
        assert raqm.getlength(word) < basic.getlength(word) * 0.8, word
    assert_matches_golden(fonts.text_mask(CONJUNCTS, 48).copy(), "conjuncts.png")


def test_mixed_script_text_is_split_into_font_runs() -> None:
    assert fonts.runs("SENIOR / वरिष्ठ नागरिक") == [("SENIOR / ", "latin"), ("वरिष्ठ नागरिक", "devanagari")]
    assert [s for _, s in fonts.runs("તમારો OPD ટોકન")] == ["gujarati", "latin", "gujarati"]
    assert fonts.script_of("ABHA ऐप") == "devanagari"
    assert fonts.script_of("Token 17") == "latin"
    assert fonts.font_for_text("ટોકન", 20) is fonts.font("gu", 20)


@given(st.text(alphabet=st.sampled_from(list("aZ 1/।क्षिાકં્\u200d")), max_size=30))
def test_runs_partition_the_text(text: str) -> None:
    parts = fonts.runs(text)
    assert "".join(chunk for chunk, _ in parts) == text
    assert all(a[1] != b[1] for a, b in itertools.pairwise(parts))


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("languages", [["en"], ["hi", "en"], ["gu"], ["en", "gu", "hi"]])
def test_every_priority_and_language_set_renders(priority: str, languages: list[str]) -> None:
    data = dataclasses.replace(golden_data(), priority=priority, languages=languages)
    normal = render_slip(dataclasses.replace(data, priority="normal"), 384)
    image = render_slip(data, 384)
    # The priority mark is an inverted (black) box, so marked slips are taller than normal ones.
    assert (image.height > normal.height) == (priority != "normal")


@pytest.mark.parametrize(
    ("utc", "shown"),
    [
        ((2025, 3, 12, 4, 35), "12 Mar 2025, 10:05 AM IST"),
        ((2025, 3, 12, 18, 30), "13 Mar 2025, 12:00 AM IST"),
        ((2025, 3, 12, 6, 45), "12 Mar 2025, 12:15 PM IST"),
    ],
)
def test_issued_at_is_shown_in_the_facility_timezone(utc: tuple[int, ...], shown: str) -> None:
    assert format_issued_at(datetime(*utc, tzinfo=UTC), "Asia/Kolkata") == shown


def test_json_round_trip() -> None:
    data = golden_data()
    wire = json.loads(json.dumps(data.to_json()))
    assert SlipData.from_json(wire) == data
    assert wire["issued_at"] == "2025-03-12T04:35:00+00:00"


@pytest.mark.parametrize(
    "change",
    [
        {"facility_names": {"hi": "जिला अस्पताल"}},
        {"priority": "vip"},
        {"languages": ["en", "ta"]},
        {"languages": []},
        {"issued_at": datetime(2025, 3, 12, 10, 5)},
        {"timezone": "Asia/Patna"},
        {"token_label": " "},
        {"source": "fax"},
    ],
)
def test_invalid_slip_data_is_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(golden_data(), **change)  # type: ignore[arg-type]


def test_malformed_json_is_a_value_error() -> None:
    wire = golden_data().to_json()
    del wire["token_label"]
    with pytest.raises(ValueError):
        SlipData.from_json(wire)


def test_bad_width_is_rejected() -> None:
    with pytest.raises(ValueError):
        render_slip(golden_data(), 500)


def test_render_and_encode_is_fast() -> None:
    # Guards against regressions like re-loading fonts or going through escpos' slow image pipeline; the
    # bound is loose because CI machines are noisy (measured median is ~8 ms on a laptop-class CPU).
    base = golden_data()
    encode_slip(render_slip(base))
    times = []
    for i in range(30):
        data = dataclasses.replace(
            base,
            token_label=f"A{i}",
            status_url=f"http://127.0.0.1:8000/t/perf{i:04d}",
            issued_at=base.issued_at + timedelta(minutes=i),
        )
        start = time.perf_counter()
        encode_slip(render_slip(data))
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.05
