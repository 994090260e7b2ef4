"""Counter QR downloads through the HTTP stack: admin only, 404 before 403, decodable codes."""

from __future__ import annotations

import io
from pathlib import Path

import zxingcpp
from PIL import Image

from tests.support.abdm import service_app
from tests.support.app import HIP, login, make_settings, seed

URL = f"https://phrsbx.abdm.gov.in/share-profile?hip-id={HIP}&counter-id=ORTHO"


async def test_counter_qr_and_poster_routes(tmp_path: Path, redis_url: str, artifacts: Path) -> None:
    settings = make_settings(tmp_path, redis_url)
    s = seed(settings)
    async with service_app(settings) as (_, client):
        base = f"/api/facilities/{HIP}/counters/ORTHO"
        assert (await client.get(f"{base}/qr.png")).status_code == 401
        clerk = await login(client, "clerk")
        assert (await client.get(f"{base}/qr.png", headers=clerk)).status_code == 403
        board = {"Authorization": f"Bearer {s.devices['board1']}"}
        assert (await client.get(f"{base}/poster.pdf", headers=board)).status_code == 403
        admin = await login(client, "admin")
        r = await client.get(f"/api/facilities/{HIP}/counters/OPD9/qr.png", headers=admin)
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
        assert (
            await client.get("/api/facilities/IN9/counters/ORTHO/qr.png", headers=clerk)
        ).status_code == 404
        r = await client.get(f"{base}/qr.png", headers=admin)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(r.content)))] == [URL]
        r = await client.get(f"{base}/qr.svg", headers=admin)
        assert r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content
        r = await client.get(f"{base}/poster.pdf", headers=admin)
        assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF-")
        r = await client.get(f"{base}/poster.png", headers=admin)
        (artifacts / "counter_poster_ortho.png").write_bytes(r.content)
        poster = Image.open(io.BytesIO(r.content))
        assert [b.text for b in zxingcpp.read_barcodes(poster)] == [URL]
