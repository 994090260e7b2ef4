"""The admin devices page shows a printer as unhealthy when its agent reports a problem."""

from __future__ import annotations

from pathlib import Path

from tests.support.app import login, make_settings, running_app, seed


async def test_unhealthy_printer_shown_on_admin_page(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        printer = {"Authorization": f"Bearer {s.devices['printer1']}"}
        r = await client.post("/api/printers/heartbeat", json={"healthy": False, "detail": "paper out"}, headers=printer)
        assert r.status_code == 200, r.text
        h = await login(client, "admin")
        page = await client.get("/admin/devices", headers=h)
        assert page.status_code == 200
        row = page.text.split('id="printer-printer1"', 1)[1].split("</tr>", 1)[0]
        assert "Printer problem" in row and "paper out" in row
        r = await client.post("/api/printers/heartbeat", json={"healthy": True, "detail": "ok"}, headers=printer)
        page = await client.get("/admin/devices", headers=h)
        row = page.text.split('id="printer-printer1"', 1)[1].split("</tr>", 1)[0]
        assert "Working" in row
