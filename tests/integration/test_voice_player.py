"""callout.js in a real headless Chromium (which has no speech voices): the
queued player plays the committed clips in order through one <audio> element,
skips missing or broken clips, and waits for unlock() when autoplay is refused.

Needs a Chromium binary (Debian package ``chromium``) and the ``playwright``
Python package; the test is skipped when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kiosk_ui.voice import callout_sequence

pytestmark = pytest.mark.browser

KIOSK_UI = Path(__file__).resolve().parents[2] / "kiosk_ui"

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<button id="start" onclick="OpdCallout.unlock()">Start sound</button>
<script src="/static/js/callout.js"></script>
<script>OpdCallout.init({languages: ["hi"], playbackRate: 4});</script>
"""

MISSING = "hi/letter_a.ogg"  # served as 404 under /broken/voice/
CORRUPT = "hi/n17.ogg"  # served as garbage under /broken/voice/


class Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/board.html":
            return self._send(200, "text/html; charset=utf-8", PAGE)
        if self.path.startswith("/broken/voice/"):
            clip = self.path.removeprefix("/broken/voice/")
            if clip == MISSING:
                return self._send(404, "text/plain", b"not found")
            if clip == CORRUPT:
                return self._send(200, "audio/ogg", b"this is not an ogg file" * 40)
            self.path = "/static/voice/" + clip
        return super().do_GET()

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(KIOSK_UI)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def chromium_path() -> str | None:
    for candidate in (os.environ.get("OPD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def playwright_instance():  # type: ignore[no-untyped-def]
    sync_api = pytest.importorskip("playwright.sync_api")
    if chromium_path() is None:
        pytest.skip("no Chromium binary (Debian package chromium)")
    with sync_api.sync_playwright() as p:
        yield p


def open_board(playwright_instance, server: str, autoplay: bool, gesture_free: bool = False):  # type: ignore[no-untyped-def]
    policy = "no-user-gesture-required" if autoplay else "user-gesture-required"
    browser = playwright_instance.chromium.launch(
        executable_path=chromium_path(), args=[f"--autoplay-policy={policy}"]
    )
    page = browser.new_page()
    page.goto(server + "/board.html")  # waits for the load event: callout.js has run
    if not gesture_free:
        assert page.evaluate("() => typeof window.OpdCallout") == "object"
    return browser, page


def wait_idle(page, played: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    page.wait_for_function(
        "n => { const s = OpdCallout.state;"
        " return !s.playing && s.queue.length === 0 && s.played.length + s.skipped.length >= n; }",
        arg=played,
        timeout=60_000,
    )
    return page.evaluate("() => JSON.parse(JSON.stringify(OpdCallout.state))")  # type: ignore[no-any-return]


def test_calls_play_in_order_through_one_audio_element(playwright_instance, server: str) -> None:  # type: ignore[no-untyped-def]
    browser, page = open_board(playwright_instance, server, autoplay=True)
    try:
        page.evaluate("""() => {
            OpdCallout.enqueue({label: "A17", desk: "3"});
            OpdCallout.enqueue({label: "OPD-117", desk: "Desk 2", languages: ["en", "gu"]});
        }""")
        during = page.evaluate("() => JSON.parse(JSON.stringify(OpdCallout.state))")
        assert during["playing"] is True
        assert len(during["queue"]) == 2  # the first call stays at the head until it is done
        first = callout_sequence(["hi"], "A17", "3")
        second = callout_sequence(["en", "gu"], "OPD-117", "Desk 2")
        state = wait_idle(page, len(first) + len(second))
        assert state["played"] == first + second
        assert state["skipped"] == []
        assert state["current"] is None
        assert page.evaluate("() => document.querySelectorAll('audio').length") == 1
    finally:
        browser.close()


def test_missing_or_broken_clips_are_skipped(playwright_instance, server: str) -> None:  # type: ignore[no-untyped-def]
    browser, page = open_board(playwright_instance, server, autoplay=True)
    try:
        page.evaluate("""() => {
            OpdCallout.init({base: "/broken/voice/"});
            OpdCallout.enqueue({label: "A17", desk: "3"});
        }""")
        seq = callout_sequence(["hi"], "A17", "3")
        state = wait_idle(page, len(seq))
        assert state["played"] == [p for p in seq if p not in (MISSING, CORRUPT)]
        assert state["skipped"] == [MISSING, CORRUPT]
    finally:
        browser.close()


def test_waits_for_unlock_when_autoplay_is_refused(playwright_instance, server: str) -> None:  # type: ignore[no-untyped-def]
    browser, page = open_board(playwright_instance, server, autoplay=False, gesture_free=True)
    try:
        # page.evaluate() runs as a user gesture, which would unlock audio, so talk
        # to the page over CDP without one until the player has been refused.
        cdp = page.context.new_cdp_session(page)

        def js(expression: str):  # type: ignore[no-untyped-def]
            reply = cdp.send(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True, "userGesture": False}
            )
            assert "exceptionDetails" not in reply, reply
            return reply["result"].get("value")

        js("OpdCallout.enqueue({label: 'B5', desk: 'D1'})")
        deadline = time.monotonic() + 20
        while not js("OpdCallout.state.blocked") and time.monotonic() < deadline:
            time.sleep(0.05)
        state = json.loads(js("JSON.stringify(OpdCallout.state)"))
        assert state["blocked"] is True
        assert state["played"] == [] and len(state["queue"]) == 1 and state["playing"] is False
        page.click("#start")  # the one-time "start sound" click
        seq = callout_sequence(["hi"], "B5", "D1")
        state = wait_idle(page, len(seq))
        assert state["played"] == seq
        assert state["blocked"] is False
    finally:
        browser.close()
