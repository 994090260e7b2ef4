"""Admin pages over HTTP: who may see them, every page in every language, no untranslated keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.app import HIP, PASSWORD, make_settings, running_app, seed

PAGES = ("/admin", "/admin/counters", "/admin/desks", "/admin/users", "/admin/devices", "/admin/reports",
         "/admin/audit")  # fmt: skip


async def test_access(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        for page in PAGES:
            r = await client.get(page)
            assert r.status_code == 303 and r.headers["location"] == f"/login?next={page}", page
        await client.post("/api/auth/login", json={"username": "clerk", "password": PASSWORD})
        for page in PAGES:
            r = await client.get(page)
            assert r.status_code == 403 and "You do not have access to this page" in r.text, page
            assert "/console" in r.text


@pytest.mark.parametrize("lang", ["en", "hi", "gu"])
async def test_pages_render_in_every_language(tmp_path: Path, redis_url: str, lang: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    seed(settings)
    async with running_app(settings) as (_, client):
        r = await client.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
        assert r.status_code == 200
        client.cookies.set("opd_lang", lang)
        for page in PAGES:
            r = await client.get(page)
            assert r.status_code == 200, (page, r.text[:500])
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
            assert f'<html lang="{lang}">' in r.text
            leftovers = re.findall(r">\s*(admin\.[a-z_.]+)\s*<", r.text)
            assert not leftovers, (page, leftovers)
            assert "<script>" not in r.text and " style=" not in r.text  # CSP: no inline code or styles
        r = await client.get("/admin/counters")
        for code in ("OPD1", "OPD2", "ORTHO"):
            assert f"/api/facilities/{HIP}/counters/{code}/poster.pdf" in r.text
        r = await client.get("/admin/reports?date=2026-01-05")
        assert 'value="2026-01-05"' in r.text and "daily.csv?date=2026-01-05" in r.text


def test_catalogs_have_the_same_keys() -> None:
    from kiosk_ui.i18n import load_language

    keys = {lang: {k for k in load_language(lang) if k.startswith("admin.")} for lang in ("en", "hi", "gu")}
    assert keys["en"] and keys["hi"] == keys["en"] and keys["gu"] == keys["en"]
    english = load_language("en")
    for lang in ("hi", "gu"):
        own = load_language(lang)
        assert [k for k in keys["en"] if own[k] == english[k]] == [], f"untranslated {lang} strings"
