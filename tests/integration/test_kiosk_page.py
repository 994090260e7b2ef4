"""The walk-in kiosk: the page, and the whole flow in Chromium down to the slip's QR on a fake printer."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zxingcpp

from printer.raster import decode_raster, join_vertical
from tests.support.app import HIP, PASSWORD, Seed, ServiceProc, make_settings, running_app, seed
from tests.support.browser import launch, screenshot

# The QR on a patient's own ABHA card (abdm-protocol.md section 6, card layout).
CARD_QR = {
    "hidn": "91-1234-5678-9012", "hid": "ramesh.k1979@abdm", "name": "Ramesh Kumar", "gender": "M",
    "statelgd": "7", "distlgd": "77", "dob": "14/8/1979", "state name": "DELHI",
    "district_name": "SOUTH DELHI", "mobile": "9876543210", "address": "H No 12, Gali 4, Lajpat Nagar",
}  # fmt: skip


async def test_kiosk_page_lists_open_departments_in_each_language(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        r = await client.get(f"/kiosk/{HIP}")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert '<html lang="hi">' in r.text  # the facility's first language, not the last patient's cookie
        assert (
            "सामान्य ओपीडी" in r.text
            and "हड्डी रोग" in r.text
            and "script-src 'self'" in r.headers["content-security-policy"]
        )
        assert "<script>" not in r.text  # data only, no inline code
        # The language buttons are the facility's (Hindi, English), in its order: no Gujarati in Patna.
        assert re.findall(r'class="kiosk-lang[^"]*" data-lang="(\w+)"', r.text) == ["hi", "en"]
        client.cookies.set("opd_lang", "en")
        r = await client.get(f"/kiosk/{HIP}?lang=gu")
        assert '<html lang="gu">' in r.text and "તમારો વિભાગ સ્પર્શ કરો" in r.text
        assert re.findall(r'class="kiosk-lang[^"]*" data-lang="(\w+)"', r.text) == ["hi", "en", "gu"]
        data = json.loads(r.text.split('id="page-data">', 1)[1].split("</script>", 1)[0])
        assert [c["code"] for c in data["counters"]] == ["OPD1", "OPD2", "ORTHO"]
        assert data["counters"][0]["names"] == {
            "en": "General OPD",
            "hi": "सामान्य ओपीडी",
            "gu": "General OPD",
        }
        assert set(data["strings"]) == {"en", "hi", "gu"} and data["strings"]["hi"]["kiosk.take_slip"]
        assert (await client.get("/kiosk/NOPE")).status_code == 404
        assert (await client.get("/static/js/kiosk.js")).status_code == 200


class CapturePrinter:
    """A raw TCP printer on 127.0.0.1 recording every job (connections that carried bytes)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.jobs: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            chunks = []
            with conn:
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            if data := b"".join(chunks):
                self.jobs.append(data)

    def wait(self, count: int, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.jobs) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.jobs) >= count, f"printer got {len(self.jobs)} job(s), expected {count}"
        return self.jobs[count - 1]


def slip_qr(data: bytes) -> str:
    image = join_vertical(decode_raster(data)).convert("L")
    (found,) = zxingcpp.read_barcodes(image)
    return str(found.text)


@pytest.fixture
def kiosk_site(tmp_path: Path, redis_url: str) -> Iterator[tuple[ServiceProc, Seed, CapturePrinter]]:
    settings = make_settings(tmp_path / "data", redis_url)
    s = seed(settings, languages=("hi", "gu", "en"))  # the kiosk offers all three
    service = ServiceProc(settings).start()
    printer = CapturePrinter()
    log = open(tmp_path / "agent.log", "wb")  # closed in the finally below
    agent = subprocess.Popen(
        [sys.executable, "-m", "printer.agent", "--server", service.url, "--token", s.devices["printer1"],
         "--printer", f"tcp://127.0.0.1:{printer.port}", "--spool", str(tmp_path / "spool")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield service, s, printer
    finally:
        agent.terminate()
        agent.wait(10)
        log.close()
        printer.sock.close()
        service.stop()


def _token(service: ServiceProc, token_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=service.url, timeout=10) as c:
        access = c.post("/api/auth/login", json={"username": "admin", "password": PASSWORD}).json()[
            "access_token"
        ]
        r = c.get(f"/api/tokens/{token_id}", headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.mark.browser
def test_kiosk_tap_prints_a_slip_whose_qr_is_the_status_url(
    kiosk_site: tuple[ServiceProc, Seed, CapturePrinter], artifacts: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    service, s, printer = kiosk_site
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        failed: list[str] = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{service.url}/kiosk/{HIP}?device={s.devices['kiosk1']}&lang=en")
        assert "device=" not in page.url  # the token left the address bar (and history)
        expect(page.locator("#screen-home")).to_be_visible()
        screenshot(page, artifacts, "kiosk_home_en.png")
        for lang, word in (("hi", "अपना विभाग छुएँ"), ("gu", "તમારો વિભાગ સ્પર્શ કરો")):
            page.click(f".kiosk-lang[data-lang={lang}]")
            expect(page.locator(".kiosk-prompt").first).to_have_text(word)
            screenshot(page, artifacts, f"kiosk_home_{lang}.png")
        page.click(".kiosk-lang[data-lang=en]")

        started = time.monotonic()
        page.click(".kiosk-counter[data-code=OPD1]")
        number = page.locator("#kiosk-number")
        expect(number).to_be_visible()
        on_screen = number.inner_text()
        expect(page.locator("#kiosk-take")).to_have_text("Please take your slip")
        slip = printer.wait(1)
        print(f"tap -> slip bytes at the printer in {time.monotonic() - started:.2f} s")
        screenshot(page, artifacts, "kiosk_done_en.png")
        assert page.locator("#kiosk-done-ok").bounding_box()["y"] + 70 < 800  # fits a 1280x800 screen
        token = _token(service, number.get_attribute("data-token-id") or "")
        assert on_screen == token["label"] == "A1"
        assert slip_qr(slip) == f"{service.url}/t/{token['public_id']}"

        # A patient with an ABHA card: the USB scanner types the card's JSON and Enter into the page.
        page.click("#kiosk-done-ok")
        page.click(".kiosk-lang[data-lang=hi]")
        page.keyboard.type(json.dumps(CARD_QR, ensure_ascii=False))
        page.keyboard.press("Enter")
        expect(page.locator("#kiosk-card-bar")).to_have_class("kiosk-card-bar read")
        screenshot(page, artifacts, "kiosk_card_read_hi.png")
        page.click(".kiosk-counter[data-code=ORTHO]")
        expect(number).to_have_text("C1")
        expect(page.locator("#kiosk-take")).to_have_text("कृपया अपनी पर्ची ले लें")
        screenshot(page, artifacts, "kiosk_done_hi.png")
        card_slip = printer.wait(2)
        token = _token(service, number.get_attribute("data-token-id") or "")
        assert token["source"] == "abha_card" and token["patient"]["verified"] is False
        assert slip_qr(card_slip) == f"{service.url}/t/{token['public_id']}"
        join_vertical(decode_raster(card_slip)).save(artifacts / "kiosk_slip_C1.png")

        # Something that is not a card is refused on the spot, before any token is issued.
        page.click("#kiosk-done-ok")
        page.keyboard.type("https://example.org/not-a-card")
        page.keyboard.press("Enter")
        expect(page.locator("#kiosk-card-bar")).to_have_class("kiosk-card-bar bad")
        page.click(".kiosk-lang[data-lang=gu]")
        expect(page.locator("#kiosk-card-text")).to_have_text(
            "આ ક્યૂઆર કોડ આભા કાર્ડનો નથી. કૃપા કરીને ફરી પ્રયાસ કરો."
        )
        screenshot(page, artifacts, "kiosk_card_bad_gu.png")

        # A revoked or wrong device token sends the kiosk to its setup screen.
        page.evaluate(f"window.localStorage.setItem('opd_kiosk_device:{HIP}', 'dev_wrong')")
        page.reload()
        page.click(".kiosk-counter[data-code=OPD2]")
        expect(page.locator("#screen-setup")).to_be_visible()
        expect(page.locator("#kiosk-setup-rejected")).to_be_visible()
        page.fill("#kiosk-setup-token", s.devices["kiosk1"])
        page.click("#kiosk-setup-form button[type=submit]")
        page.click(".kiosk-counter[data-code=OPD2]")
        expect(number).to_have_text("B1")
        printer.wait(3)
        assert errors == []
        # Only the wrong device token's 401 may fail (the page's icon is found, too).
        assert failed == [
            f"401 {service.url}/api/facilities/{HIP}/counters/OPD2/tokens"
        ]
        browser.close()
