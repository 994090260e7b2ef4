"""`opd-token demo`'s facility: the board and the walk-in kiosk it prints work with the tokens it prints."""

from __future__ import annotations

from pathlib import Path

from token_service.cli_abdm import DEMO_HIP, seed_demo
from tests.support.app import make_settings, running_app


async def test_demo_devices_open_the_board_and_issue_walk_in_tokens(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(tmp_path, redis_url)
    creds = seed_demo(settings)
    board, kiosk = creds["board_token"], creds["kiosk_token"]
    assert board.startswith("dev_") and kiosk.startswith("dev_") and board != kiosk
    for name in ("demo-board", "demo-kiosk"):
        assert (tmp_path / f"{name}-token.txt").stat().st_mode & 0o077 == 0  # kept for the owner only

    # A second start keeps the same devices and tokens: the kiosk stays paired across restarts.
    assert seed_demo(settings) == creds
    # A token file deleted by hand: that device gets a new token, and the old one stops working.
    (tmp_path / "demo-board-token.txt").unlink()
    renewed = seed_demo(settings)
    assert renewed["kiosk_token"] == kiosk and renewed["board_token"].startswith("dev_")
    old_board, board = board, renewed["board_token"]
    assert board != old_board

    async with running_app(settings) as (_, client):
        walk_in = await client.post(
            f"/api/facilities/{DEMO_HIP}/counters/OPD1/tokens", json={},
            headers={"Authorization": f"Bearer {kiosk}"},
        )  # fmt: skip
        assert walk_in.status_code == 201, walk_in.text
        assert walk_in.json()["label"] == "A1"
        # A board device may not issue tokens.
        as_board = await client.post(
            f"/api/facilities/{DEMO_HIP}/counters/OPD1/tokens", json={},
            headers={"Authorization": f"Bearer {board}"},
        )  # fmt: skip
        assert as_board.status_code == 403
        stale = await client.post(
            f"/api/facilities/{DEMO_HIP}/counters/OPD1/tokens", json={},
            headers={"Authorization": f"Bearer {old_board}"},
        )  # fmt: skip
        assert stale.status_code == 401  # an unknown credential, where the current board's is refused (403)
        shown = await client.get(f"/api/facilities/{DEMO_HIP}/board?token={board}")
        assert shown.status_code == 200
        assert shown.json()["waiting"] == {"OPD1": 1, "OPD2": 0, "ORTHO": 0}
