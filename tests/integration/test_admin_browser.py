"""Admin pages in a real Chromium against `opd-token serve`: log in, add a counter, download its poster and
QR, add a device, and screenshot every admin page in en/hi/gu at 1920×1080 into test-artifacts/."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from printer.poster import counter_qr_url
from tests.support.app import HIP, PASSWORD, ServiceProc
from tests.support.browser import log_in, new_page, running_browser, screenshot, seeded_service

pytestmark = pytest.mark.browser
PAGES = ("settings", "counters", "desks", "users", "devices", "reports", "audit")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from running_browser()


@pytest.fixture
def service(tmp_path: Path, redis_url: str) -> Iterator[ServiceProc]:
    yield from seeded_service(tmp_path, redis_url)


def some_traffic(base: str) -> None:
    """A few tokens so the reports page has figures to draw."""
    with httpx.Client(base_url=base, timeout=10) as http:
        token = http.post("/api/auth/login", json={"username": "clerk", "password": PASSWORD}).json()
        http.cookies.clear()
        h = {"Authorization": f"Bearer {token['access_token']}"}
        for counter in ("OPD1", "OPD1", "OPD2", "OPD1", "OPD2"):
            assert http.post(f"/api/facilities/{HIP}/counters/{counter}/tokens", headers=h).status_code == 201
        for desk in ("D1", "D1", "D2"):
            assert http.post(f"/api/facilities/{HIP}/desks/{desk}/call-next", headers=h).status_code == 200


def admin_page(browser: Any, base: str, lang: str = "en") -> tuple[Any, Any, list[str]]:
    page = new_page(browser, locale="en-IN", accept_downloads=True)
    ctx = page.context
    ctx.add_cookies([{"name": "opd_lang", "value": lang, "url": base}])
    problems: list[str] = []
    # Script errors and CSP refusals; failed requests are checked by URL below (a 409 can be expected).
    page.on(
        "console",
        lambda m: problems.append(m.text) if m.type == "error" and "Failed to load" not in m.text else None,
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(base + "/admin")
    assert "/login" in page.url
    log_in(page, "admin")
    page.wait_for_url(base + "/admin")
    return ctx, page, problems


def test_admin_creates_counter_downloads_poster_and_adds_device(browser: Any, service: ServiceProc) -> None:
    ctx, page, problems = admin_page(browser, service.url)
    page.fill("#fac-name-gu", "જિલ્લા હૉસ્પિટલ પટના")
    page.select_option("#fac-lang-0", "gu")
    page.select_option("#fac-lang-1", "hi")
    page.select_option("#fac-lang-2", "en")
    page.fill("#fac-validity", "45")
    page.fill("#fac-skip", "2")
    page.click("#settings-save")
    page.wait_for_selector("#flash:not(.hidden)")
    with httpx.Client(base_url=service.url) as http:
        r = http.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        got = http.get(f"/api/admin/facilities/{HIP}/settings", headers=h).json()
    assert got["languages"] == ["gu", "hi", "en"] and got["names"]["gu"] == "જિલ્લા હૉસ્પિટલ પટના"
    assert (got["validity_seconds"], got["skip_places"], got["ageing_seconds"]) == (2700, 2, 2700)
    page.fill("#fac-validity", "")  # empty: back to the service default
    page.click("#settings-save")
    page.wait_for_selector("#flash:not(.hidden)")
    assert page.input_value("#fac-validity") == ""

    page.click("#nav-counters")
    page.fill("#new-counter-code", "NEURO")
    page.fill("#new-counter-prefix", "N")
    page.fill("#new-counter-dept", "Neurology")
    page.fill("#new-counter-name-en", "Neurology")
    page.fill("#new-counter-name-hi", "न्यूरोलॉजी")
    page.fill("#new-counter-name-gu", "ન્યુરોલોજી")
    page.click("#counter-create-submit")
    page.wait_for_selector("#counter-NEURO")
    assert page.is_visible("#flash")
    assert "NEURO" in page.inner_text("#counter-NEURO")

    with page.expect_download() as info:
        page.click("#counter-NEURO a.poster-pdf")
    pdf = Path(info.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 2000
    with page.expect_download() as info:
        page.click("#counter-NEURO a.qr-png")
    png = Path(info.value.path()).read_bytes()
    import zxingcpp
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert [b.text for b in found] == [counter_qr_url(service.settings.phr_share_url, HIP, "NEURO")]

    # The same form refuses a duplicate with a readable message and changes nothing.
    page.fill("#new-counter-code", "NEURO")
    page.fill("#new-counter-name-en", "Again")
    page.click("#counter-create-submit")
    page.wait_for_selector("#counter-create .form-error:not(.hidden)")
    assert "already exists" in page.inner_text("#counter-create .form-error")

    page.click("#nav-devices")
    page.fill("#new-device-name", "hall-tv-2")
    page.click("#device-create-submit")
    page.wait_for_selector("#secret-box:not(.hidden)")
    token = page.inner_text("#secret-value").strip()
    assert token.startswith("dev_")
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=service.url)
    page.click("#secret-copy")
    page.locator("#secret-copy", has_text="Copied").wait_for()  # no string predicates: CSP forbids eval
    assert page.evaluate("navigator.clipboard.readText()") == token
    r = httpx.get(service.url + "/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.json()["role"] == "board" and r.json()["name"] == "hall-tv-2"
    page.click("#secret-done")
    page.wait_for_selector("#device-hall-tv-2")
    assert token not in page.content()  # shown once, never again
    assert problems == [f"409 {service.url}/api/admin/facilities/{HIP}/counters"]
    ctx.close()


def test_screenshots_of_every_admin_page(browser: Any, service: ServiceProc, artifacts: Path) -> None:
    some_traffic(service.url)
    for lang in ("en", "hi", "gu"):
        ctx, page, problems = admin_page(browser, service.url, lang)
        for name in PAGES:
            page.goto(service.url + ("/admin" if name == "settings" else f"/admin/{name}"))
            page.wait_for_load_state("load")
            if name == "counters":
                page.click("#counter-OPD1 .edit-toggle")
            screenshot(page, artifacts, f"admin-{name}-{lang}.png", full_page=True)
            assert page.locator("html").get_attribute("lang") == lang
        assert problems == [], (lang, problems)
        ctx.close()


def test_board_switches_on_the_settings_page(browser: Any, service: ServiceProc) -> None:
    ctx, page, problems = admin_page(browser, service.url, "hi")
    assert not page.is_checked("#fac-board-names") and not page.is_checked("#fac-board-device")
    assert page.locator("#board-private-service").count() == 0  # OPD_BOARD_PUBLIC is on
    page.check("#fac-board-names")
    page.check("#fac-board-device")
    with page.expect_navigation():  # saved: the page reloads with the new values
        page.click("#settings-save")
    page.wait_for_selector("#flash:not(.hidden)")
    assert page.is_checked("#fac-board-names") and page.is_checked("#fac-board-device")
    with httpx.Client(base_url=service.url) as http:
        r = http.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        http.cookies.clear()
        got = http.get(f"/api/admin/facilities/{HIP}/settings", headers=h).json()
        assert (got["board_names"], got["board_requires_device"], got["board_public"]) == (True, True, False)
        assert http.get(f"/api/facilities/{HIP}/board").status_code == 401  # at once, no restart
        page.uncheck("#fac-board-device")
        with page.expect_navigation():
            page.click("#settings-save")
        page.wait_for_selector("#flash:not(.hidden)")
        assert not page.is_checked("#fac-board-device") and page.is_checked("#fac-board-names")
        assert http.get(f"/api/facilities/{HIP}/board").status_code == 200
        got = http.get(f"/api/admin/facilities/{HIP}/settings", headers=h).json()
        assert (got["board_names"], got["board_requires_device"]) == (True, False)
    assert problems == []
    ctx.close()
