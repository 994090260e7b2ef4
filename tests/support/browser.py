"""Headless Chromium for the page tests: the launch flags, a page in a fresh context, signing in through
the login form, and screenshots into test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.app import PASSWORD, ServiceProc, make_settings, seed

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1920, "height": 1080}


def launch(playwright: Any) -> Any:
    """Chromium from /usr/bin/chromium with the flags every page test uses."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def running_browser() -> Iterator[Any]:
    """One Chromium for a module's tests (`yield from` it in a fixture); skips without playwright or
    /usr/bin/chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium at /usr/bin/chromium")
    with sync_api.sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def seeded_service(tmp_path: Path, redis_url: str) -> Iterator[ServiceProc]:
    """`opd-token serve` on the seeded facility for the pages to talk to (`yield from` it in a fixture)."""
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    svc = ServiceProc(settings).start()
    yield svc
    svc.stop()


def new_page(browser: Any, viewport: dict[str, int] = VIEWPORT, **context_options: Any) -> Any:
    """A page in a fresh browser context (its own cookies); `page.context` is that context."""
    return browser.new_context(viewport=viewport, **context_options).new_page()


def log_in(page: Any, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form the page is showing."""
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-submit")


def screenshot(page: Any, artifacts: Path, name: str, **options: Any) -> None:
    """Save a screenshot of `page` as artifacts/`name` (the `artifacts` fixture is test-artifacts/)."""
    page.screenshot(path=str(artifacts / name), **options)
