"""The pages in a real Chromium against the real service process: console keys, live board, voice, status.

Each test runs `opd-token serve` as a child process (ServiceProc) on a private Redis and SQLite; two
browser contexts play the clerk and the hall display.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from kiosk_ui.voice import callout_sequence
from tests.support.app import HIP, PASSWORD, ServiceProc
from tests.support.browser import log_in, new_page, running_browser, screenshot, seeded_service

pytestmark = pytest.mark.browser
CARD = {
    "hidn": "91-1234-5678-9012", "hid": "ramesh.k1979@abdm", "name": "Ramesh Kumar Verma", "gender": "M",
    "dob": "14/8/1979", "state name": "BIHAR", "district_name": "PATNA", "mobile": "9876543210",
    "address": "H No 12, Gali 4, Kankarbagh",
}  # fmt: skip
TILE = "document.querySelector('.desk-tile[data-desk=\"%s\"] .tile-token')"
CURRENT = "label => window.consoleState.current && window.consoleState.current.label === label"
PRIVATE = ("Ramesh Kumar Verma", "9876543210", "91-1234-5678-9012", "91123456789012", "Sita Devi Sharma")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from running_browser()


@pytest.fixture
def service(tmp_path: Path, redis_url: str) -> Iterator[ServiceProc]:
    yield from seeded_service(tmp_path, redis_url)


class Api:
    """The clerk's JSON API over Bearer (setup and assertions; the UI itself is driven in the browser)."""

    def __init__(self, base: str, user: str = "clerk") -> None:
        self.http = httpx.Client(base_url=base, timeout=10)
        token = self.http.post("/api/auth/login", json={"username": user, "password": PASSWORD}).json()
        self.http.headers["Authorization"] = f"Bearer {token['access_token']}"
        self.http.cookies.clear()

    def issue(self, counter: str = "OPD1", **body: Any) -> dict[str, Any]:
        r = self.http.post(f"/api/facilities/{HIP}/counters/{counter}/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    def call(self, desk: str = "D1") -> dict[str, Any]:
        r = self.http.post(f"/api/facilities/{HIP}/desks/{desk}/call-next")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def token(self, token_id: str) -> dict[str, Any]:
        return self.http.get(f"/api/tokens/{token_id}").json()  # type: ignore[no-any-return]


def open_board(browser: Any, base: str, lang: str = "en", query: str = "") -> Any:
    page = new_page(browser, locale="en-IN")
    page.goto(f"{base}/board/{HIP}?lang={lang}&rate=4{query}")
    page.wait_for_function("() => window.boardState && window.boardState.snapshots >= 1", timeout=5000)
    return page


def clerk_console(browser: Any, base: str, desk: str = "D1", lang: str = "en") -> Any:
    page = new_page(browser, locale="en-IN", accept_downloads=True)
    page.goto(f"{base}/lang/{lang}?next=/console")
    assert "/login" in page.url
    log_in(page, "clerk")
    page.wait_for_url("**/console")
    page.click(f'a[data-desk="{desk}"]')
    page.wait_for_function("() => window.consoleState && window.consoleState.refreshes >= 1", timeout=5000)
    return page


def tile_label(board: Any, desk: str) -> str:
    return str(board.eval_on_selector(f'.desk-tile[data-desk="{desk}"] .tile-token', "e => e.textContent"))


def wait_idle(board: Any, n: int) -> list[str]:
    board.wait_for_function(
        "n => { const s = OpdCallout.state; return !s.playing && !s.queue.length && s.played.length >= n; }",
        arg=n, timeout=30_000,
    )  # fmt: skip
    return board.evaluate("() => OpdCallout.state.played.slice()")  # type: ignore[no-any-return]


def test_console_keys_drive_the_board_and_voice(browser: Any, service: ServiceProc) -> None:
    api = Api(service.url)
    issued = [api.issue(name=f"Patient {i}") for i in range(4)]
    board = open_board(browser, service.url)
    board.click("#start-sound")
    board.wait_for_function("() => window.boardState.soundUnlocked")
    console = clerk_console(browser, service.url)
    assert console.eval_on_selector_all("#waiting-rows tr", "rows => rows.length") == 4

    t0 = time.monotonic()
    console.keyboard.press("n")
    board.wait_for_function(f"() => {TILE % 'D1'}.textContent === 'A1'", timeout=1000)
    shown_s = time.monotonic() - t0
    assert shown_s < 1.0
    call = board.evaluate("() => window.boardState.calls[window.boardState.calls.length - 1]")
    assert (call["label"], call["number"], call["counter"], call["desk"]) == ("A1", 1, "OPD1", "D1")
    seq = callout_sequence(["hi", "en"], "A1", "Desk 1")
    assert wait_idle(board, len(seq)) == seq
    console.wait_for_function(CURRENT, arg="A1")

    console.keyboard.press("r")  # recall: spoken again, flagged as a recall
    board.wait_for_function("() => window.boardState.calls.length === 2")
    assert board.evaluate("() => window.boardState.calls[1].recall") is True
    assert wait_idle(board, 2 * len(seq)) == seq + seq
    assert api.token(issued[0]["id"])["recalls"] == 1

    console.keyboard.press("s")  # skip: back in the line, the desk is free
    board.wait_for_function("() => document.querySelector('.desk-tile[data-desk=\"D1\"] .tile-token.empty')")
    assert api.token(issued[0]["id"])["status"] == "waiting"

    console.keyboard.press("n")
    board.wait_for_function("() => window.boardState.calls.length === 3")
    called = board.evaluate("() => window.boardState.calls[2].label")
    assert called == "A2" and tile_label(board, "D1") == "A2"
    console.wait_for_function(CURRENT, arg="A2")

    console.keyboard.press("t")  # transfer: the dialog takes the keyboard, Enter picks OPD2
    console.wait_for_selector("#transfer-dialog[open]")
    console.keyboard.press("Enter")
    console.wait_for_function("() => window.consoleState.current === null")
    assert api.token(issued[1]["id"])["counter"] == "OPD2"

    console.keyboard.press("u")  # undo the transfer
    console.wait_for_function(CURRENT, arg="A2")
    back = api.token(issued[1]["id"])
    assert (back["counter"], back["status"]) == ("OPD1", "called")

    console.keyboard.press("c")
    console.wait_for_function("() => window.consoleState.current === null")
    assert api.token(issued[1]["id"])["status"] == "completed"
    board.wait_for_function("() => document.querySelector('.desk-tile[data-desk=\"D1\"] .tile-token.empty')")
    print(f"\nboard showed the call {shown_s * 1000:.0f} ms after the key press")


def test_walk_in_with_abha_card_profile_and_fhir_export(browser: Any, service: ServiceProc) -> None:
    console = clerk_console(browser, service.url)
    console.click("#walkin-qr")
    console.keyboard.insert_text(json.dumps(CARD))
    console.keyboard.press("Enter")  # what a hand scanner sends after the QR text
    # The line may first refresh on the live event, before the shared profile is committed beside the
    # token (the event goes out from Redis first); the walk-in's own refresh then brings the profile.
    console.wait_for_function(
        "() => window.consoleState.waiting.length === 1 && window.consoleState.waiting[0].patient"
    )
    row = console.inner_text("#waiting-rows tr")
    assert "Ramesh Kumar Verma" in row and "ramesh.k1979@abdm" in row and "ABHA card" in row
    console.keyboard.press("Escape")  # out of the scan field: the shortcuts work again
    console.keyboard.press("n")
    console.wait_for_function("() => window.consoleState.current && window.consoleState.current.patient")
    fields = console.inner_text("#profile-fields")
    for value in ("Ramesh Kumar Verma", "9876543210", "91-1234-5678-9012", "ramesh.k1979@abdm", "1979"):
        assert value in fields
    with console.expect_download() as download:
        console.keyboard.press("f")
    resource = json.loads(Path(download.value.path()).read_text())
    assert resource["resourceType"] == "Patient" and resource["gender"] == "male"
    assert resource["birthDate"] == "1979-08-14"
    assert {"system": "https://healthid.ndhm.gov.in", "value": "91-1234-5678-9012"}.items() <= resource[
        "identifier"
    ][0].items()


def test_status_page_position_updates_live(browser: Any, service: ServiceProc) -> None:
    api = Api(service.url)
    tokens = [api.issue() for _ in range(4)]
    page = new_page(browser, viewport={"width": 412, "height": 860})
    page.goto(f"{service.url}/t/{tokens[3]['public_id']}?lang=hi")
    page.wait_for_function("() => window.statusState && window.statusState.position === 3")
    assert "आपसे पहले 3" in page.inner_text("#status-position")
    api.call("D1")
    api.call("D2")
    page.wait_for_function("() => window.statusState.position === 1", timeout=2000)
    api.call("D1")
    page.wait_for_function("() => window.statusState.position === 0", timeout=2000)
    api.call("D2")
    page.wait_for_function("() => window.statusState.status === 'called'", timeout=2000)
    assert "Desk 2" in page.inner_text("#status-main")


def test_board_resyncs_after_service_restart(browser: Any, service: ServiceProc) -> None:
    api = Api(service.url)
    for _ in range(3):
        api.issue()
    board = open_board(browser, service.url)
    api.call("D1")
    board.wait_for_function("() => window.boardState.calls.length === 1")
    service.stop()
    board.wait_for_function("() => window.boardState.connected === false", timeout=20_000)
    service.start()
    api = Api(service.url)
    api.call("D2")  # happened while the board may still be reconnecting: the snapshot carries it
    board.wait_for_function(
        "() => window.boardState.connected && window.boardState.snapshots >= 2 &&"
        " document.querySelector('.desk-tile[data-desk=\"D2\"] .tile-token').textContent === 'A2'",
        timeout=15_000,
    )  # fmt: skip
    assert tile_label(board, "D1") == "A1"
    assert board.evaluate("() => window.boardState.waiting.OPD1") == 1


def test_public_pages_and_streams_carry_no_personal_data(browser: Any, service: ServiceProc) -> None:
    api = Api(service.url)
    card = api.issue(abha_qr=json.dumps(CARD))
    api.issue(name="Sita Devi Sharma")
    api.call("D1")
    seen: list[str] = []
    with httpx.Client(base_url=service.url, timeout=5) as anon:
        for path in (f"/board/{HIP}", f"/api/facilities/{HIP}/board", f"/t/{card['public_id']}",
                     f"/api/status/{card['public_id']}"):  # fmt: skip
            r = anon.get(path)
            assert r.status_code == 200, path
            seen.append(r.text)
        for path in (f"/api/facilities/{HIP}/board/events", f"/api/status/{card['public_id']}/events"):
            with anon.stream("GET", path) as resp:
                lines = []
                for line in resp.iter_lines():
                    lines.append(line)
                    if line.startswith("data:"):
                        break
                seen.append("\n".join(lines))
    board = open_board(browser, service.url)
    api.call("D2")
    board.wait_for_function("() => window.boardState.calls.length === 1")
    seen.append(board.content())
    seen.append(json.dumps(board.evaluate("() => window.boardState")))
    blob = "\n".join(seen)
    assert "A1" in blob and "A2" in blob
    for secret in PRIVATE:
        assert secret not in blob, secret


def test_screenshots_in_three_languages(browser: Any, service: ServiceProc, artifacts: Path) -> None:
    api = Api(service.url, "admin")
    api.issue(abha_qr=json.dumps(CARD))
    for i in range(5):
        api.issue(name=f"Walk-in {i}", priority="senior" if i == 2 else "normal")
    api.issue(counter="OPD2")
    for _ in range(3):
        api.issue(counter="ORTHO")
    first = api.call("D1")
    api.call("D2")
    r = api.http.post(f"/api/facilities/{HIP}/desks/D3/call-next")
    assert r.status_code == 200
    waiting = api.issue()
    console = clerk_console(browser, service.url)
    board = open_board(browser, service.url)
    for lang in ("en", "hi", "gu"):
        login = new_page(browser)
        login.goto(f"{service.url}/login?lang={lang}")
        screenshot(login, artifacts, f"ui-login-{lang}.png")
        console.goto(f"{service.url}/console?desk=D2&lang={lang}")
        console.wait_for_function("() => window.consoleState.current && window.consoleState.current.patient")
        screenshot(console, artifacts, f"ui-console-{lang}.png")
        board.goto(f"{service.url}/board/{HIP}?lang={lang}")
        board.wait_for_function("() => window.boardState.snapshots >= 1")
        board.evaluate("document.fonts.ready")
        screenshot(board, artifacts, f"ui-board-{lang}.png")
        status = new_page(browser)
        status.goto(f"{service.url}/t/{waiting['public_id']}?lang={lang}")
        status.wait_for_function("() => window.statusState && window.statusState.updates >= 1")
        screenshot(status, artifacts, f"ui-status-{lang}.png")
        assert first["label"] in board.inner_text("#desk-tiles")


def test_board_with_masked_names_shows_no_full_names(
    browser: Any, service: ServiceProc, artifacts: Path
) -> None:
    admin = Api(service.url, "admin")
    r = admin.http.patch(f"/api/admin/facilities/{HIP}/settings", json={"board_names": True})
    assert r.status_code == 200 and r.json()["board_names"] is True
    api = Api(service.url)
    card = api.issue(abha_qr=json.dumps(CARD))
    sita = api.issue(name="सीता देवी शर्मा")
    api.issue(name="Sita Devi Sharma", counter="OPD2")
    api.issue()
    api.call("D1")
    board = open_board(browser, service.url)
    board.wait_for_function(f"() => {TILE % 'D1'}.textContent === 'A1'")
    board.wait_for_selector('.desk-tile[data-desk="D1"] .tile-name')
    assert board.inner_text('.desk-tile[data-desk="D1"] .tile-name') == "R**** K****"
    api.call("D2")  # the call shows at once; its masked name follows with the update
    board.wait_for_function(
        "() => { const n = document.querySelector('.desk-tile[data-desk=\"D2\"] .tile-name');"
        " return n && n.textContent === 'सी**** दे****'; }"
    )  # fmt: skip
    assert board.inner_text("#recent-list").count("****") == 4
    seen = [board.content(), json.dumps(board.evaluate("() => window.boardState"), ensure_ascii=False)]
    with httpx.Client(base_url=service.url, timeout=5) as anon:
        for path in (f"/board/{HIP}", f"/api/facilities/{HIP}/board", f"/t/{card['public_id']}",
                     f"/api/status/{card['public_id']}", f"/t/{sita['public_id']}"):  # fmt: skip
            r = anon.get(path)
            assert r.status_code == 200, path
            if "/t/" in path or "/status/" in path:
                assert "****" not in r.text, path  # the status page shows no name, not even masked
            seen.append(r.text)
        for path in (f"/api/facilities/{HIP}/board/events", f"/api/status/{card['public_id']}/events"):
            with anon.stream("GET", path) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        seen.append(line)
                        break
    blob = "\n".join(seen)
    assert "R**** K****" in blob and "सी**** दे****" in blob
    for secret in (*PRIVATE, "सीता देवी शर्मा", "सीता", "Ramesh Kumar", "ramesh.k1979"):
        assert secret not in blob, secret
    for lang in ("en", "hi"):
        board.goto(f"{service.url}/board/{HIP}?lang={lang}")
        board.wait_for_function("() => window.boardState.snapshots >= 1")
        board.wait_for_selector('.desk-tile[data-desk="D2"] .tile-name')
        board.evaluate("document.fonts.ready")
        screenshot(board, artifacts, f"ui-board-names-{lang}.png")


def test_board_clock_shows_the_facility_time_on_a_utc_pc(browser: Any, service: ServiceProc) -> None:
    # The PC behind a hall TV is often left on UTC; the board must still show Indian time.
    page = new_page(browser, locale="en-IN", timezone_id="UTC")
    page.goto(f"{service.url}/board/{HIP}?lang=en")
    page.wait_for_function("() => window.boardState && window.boardState.snapshots >= 1", timeout=5000)
    shown = page.locator("#board-clock").inner_text().strip().lower()
    now = datetime.now(ZoneInfo("Asia/Kolkata"))
    expected = {(now + timedelta(minutes=m)).strftime("%I:%M %p").lower() for m in (-1, 0, 1)}
    assert shown in expected, (shown, expected)


def test_api_pages_work_without_internet_and_pages_have_an_icon(browser: Any, service: ServiceProc) -> None:
    # A hospital's network often reaches no CDN: every request off this server is refused here, and the
    # API pages must still draw their operations from the files the service ships.
    page = new_page(browser)
    outside: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(service.url):
            route.continue_()
        else:
            if route.request.resource_type != "image":  # ReDoc's footer links its maker's logo
                outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{service.url}/docs")
    page.get_by_text("ABDM v3 profile share").first.wait_for(timeout=10_000)
    page.goto(f"{service.url}/redoc")  # drawn by its script: the operation is in its menu
    page.get_by_text("ABDM v3 profile share").first.wait_for(state="attached", timeout=10_000)
    assert outside == []

    page.goto(f"{service.url}/login")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon is not None
    for path in (icon, "/favicon.ico"):
        r = page.request.get(f"{service.url}{path}")
        assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml"), path
        assert r.body().startswith(b"<svg")
