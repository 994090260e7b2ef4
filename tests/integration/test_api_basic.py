"""Staff API through the real ASGI stack with a real Redis and SQLite: the happy path and its errors."""

from __future__ import annotations

from pathlib import Path

from tests.support.app import login, make_settings, running_app, seed

ISSUED = 'opd_tokens_issued_total{counter="OPD1",hip_id="IN0710000123",source="walk_in"}'


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def test_walk_in_call_next_and_actions(tmp_path: Path, redis_url: str, database_url: str) -> None:
    settings = make_settings(tmp_path, redis_url, database_url)
    s = seed(settings)
    async with running_app(settings) as (_, client):
        h = await login(client, "clerk")
        issued_before = _metric((await client.get("/metrics")).text, ISSUED)
        issued = []
        for _ in range(3):
            r = await client.post(f"/api/facilities/{s.hip_id}/counters/OPD1/tokens", json={"name": "Sita"}, headers=h)
            assert r.status_code == 201, r.text
            issued.append(r.json())
        assert [t["number"] for t in issued] == [1, 2, 3]
        assert [t["label"] for t in issued] == ["A1", "A2", "A3"]
        r = await client.post(f"/api/facilities/{s.hip_id}/counters/OPD1/call-next", json={"desk": "D1"}, headers=h)
        assert r.status_code == 200 and r.json()["number"] == 1 and r.json()["status"] == "called"
        tid = r.json()["id"]
        r = await client.post(f"/api/tokens/{tid}/recall", headers=h)
        assert r.json()["recalls"] == 1
        r = await client.post(f"/api/tokens/{tid}/skip", json={"places": 1}, headers=h)
        assert r.json()["status"] == "waiting"
        q = (await client.get(f"/api/facilities/{s.hip_id}/counters/OPD1/queue", headers=h)).json()
        assert [t["number"] for t in q["waiting"]] == [2, 1, 3]
        assert q["waiting"][0]["patient"] == {"name": "Sita"}
        r = await client.post(f"/api/facilities/{s.hip_id}/desks/D1/undo", headers=h)
        assert r.status_code == 200 and r.json()[0]["status"] == "called"
        r = await client.post(f"/api/tokens/{tid}/transfer", json={"counter": "OPD2"}, headers=h)
        assert r.json()["counter"] == "OPD2" and r.json()["label"] == "A1"
        r = await client.post(f"/api/tokens/{tid}/complete", headers=h)
        assert r.status_code == 409 and r.json()["error"] == "conflict"
        r = await client.post(f"/api/tokens/{tid}/cancel", headers=h)
        assert r.json()["status"] == "cancelled"
        ready = await client.get("/readyz")
        assert ready.json() == {"status": "ok", "redis": "ok", "database": "ok"}
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, ISSUED) == issued_before + 3  # counters are per process: compare the delta
        assert 'opd_queue_waiting{counter="OPD1",hip_id="IN0710000123"} 2.0' in metrics
