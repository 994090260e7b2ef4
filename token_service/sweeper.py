"""Background expiry: every few seconds expire waiting tokens whose validity or local day has ended.

Every queue script also sweeps a bounded batch first, so correctness never depends on this loop; it
keeps boards and reports current when a counter is idle. Several workers sweeping at once is harmless
(the script is atomic and idempotent).
"""

from __future__ import annotations

import asyncio
import logging

from token_service.state import AppState

log = logging.getLogger(__name__)
INTERVAL_S = 5.0


async def sweep_forever(state: AppState) -> None:
    while True:
        try:
            for hip in await state.directory.hip_ids():
                while await state.queue.sweep(hip, 500) >= 500:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store is down: try again next round
            log.warning("expiry sweep skipped: %s", exc)
        await asyncio.sleep(INTERVAL_S)
