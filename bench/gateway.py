"""The gateway sandbox as the run's on-share receiver, keeping every on-share (not only the newest 500)."""

from __future__ import annotations

import argparse
import threading
from typing import Any

import orjson
import uvicorn
from fastapi import Response

from bench.procs import CLIENT_ID, CLIENT_SECRET
from token_service.abdm.sandbox import create_sandbox_app
from token_service.abdm.sandbox_state import SandboxState
from token_service.app import tune_gc


class RecordingSandbox(SandboxState):
    """Adds a compact, unbounded log: the checks need every on-share of a run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[tuple[str, float, int, Any, Any, Any]] = []
        self._log_lock = threading.Lock()

    def record_on_share(self, record: dict[str, Any]) -> dict[str, Any]:
        stored = super().record_on_share(record)
        row = (
            str(stored.get("requestId")), float(stored["received_at"]), int(stored.get("answered") or 0),
            stored.get("tokenNumber"), stored.get("context"), stored.get("error"),
        )  # fmt: skip
        with self._log_lock:
            self.received.append(row)
        return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    ns = parser.parse_args()
    key = SandboxState.create(ns.key).private_key
    state = RecordingSandbox(key, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    app = create_sandbox_app(state)

    @app.get("/bench/received")
    async def received() -> Response:
        with state._log_lock:
            rows = list(state.received)
        return Response(orjson.dumps(rows), media_type="application/json")

    @app.delete("/bench/received", status_code=204)
    async def clear() -> Response:
        with state._log_lock:
            state.received.clear()
        state.clear_on_shares()
        return Response(status_code=204)

    tune_gc()  # as `opd-token sandbox` does: no full collections walking every module's objects
    uvicorn.run(
        app, host="127.0.0.1", port=ns.port, log_level="warning", access_log=False, proxy_headers=False
    )


if __name__ == "__main__":
    main()
