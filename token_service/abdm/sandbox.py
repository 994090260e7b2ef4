"""A local stand-in for the ABDM gateway (sessions, JWKS, on-share receiver, faults) for demos and tests."""

from __future__ import annotations

import asyncio
import html
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from token_service.abdm.gateway import ON_SHARE_V1_PATH, ON_SHARE_V3_PATH
from token_service.abdm.sandbox_state import SandboxState
from token_service.abdm.schemas import header_value, parse_timestamp
from token_service.fast_routes import fast_routes

__all__ = ["DEFAULT_PORT", "SandboxState", "create_sandbox_app", "run_sandbox"]

DEFAULT_PORT = 9009
# The real gateway refuses TIMESTAMPs further off than this (ABDM-2402); so do we, to catch clock bugs.
MAX_CLOCK_SKEW_S = 300


class FaultIn(BaseModel):
    mode: Literal["ok", "5xx", "slow", "401"]
    until: float | None = Field(default=None, ge=0, description="seconds from now; null = until changed")
    delay_s: float = Field(default=5.0, ge=0, le=120, description="how long 'slow' waits before answering")
    count: int | None = Field(default=None, ge=1, description="fail only this many calls")


class ShareIn(BaseModel):
    target: str | None = Field(default=None, description="HIP bridge base URL; default: registered bridge")
    version: Literal["v3", "v1", "v0.5"] = "v3"
    hip_id: str
    counter: str
    abha_address: str
    name: str = "Ramesh Kumar"
    gender: str | None = "M"
    year_of_birth: int | None = 1979
    month_of_birth: int | None = 8
    day_of_birth: int | None = 14
    abha_number: str | None = None
    phone: str | None = "9876543210"
    request_id: str | None = None


def _abdm_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _invalid_credentials() -> JSONResponse:
    # The shape the gateway's API manager uses for a bad or expired bearer token.
    body = {"fault": {"code": 900901, "message": "Invalid Credentials", "description": "Invalid token"}}
    return JSONResponse(body, status_code=401)


def _bearer(request: Request) -> str:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def summarise_on_share(version: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """The fields a person wants to see, from either on-share shape."""
    if body is None:
        return {}
    if version == "v3":
        ack = _dig(body, "acknowledgement")
        return {
            "requestId": _dig(body, "response", "requestId"),
            "status": _dig(ack, "status"),
            "abhaAddress": _dig(ack, "abhaAddress"),
            "context": _dig(ack, "profile", "context"),
            "tokenNumber": _dig(ack, "profile", "tokenNumber"),
            "expiry": _dig(ack, "profile", "expiry"),
            "error": _dig(body, "error"),
        }
    return {
        "requestId": _dig(body, "resp", "requestId"),
        "status": _dig(body, "acknowledgement", "status"),
        "abhaAddress": _dig(body, "acknowledgement", "healthId"),
        "context": None,
        "tokenNumber": _dig(body, "acknowledgement", "tokenNumber"),
        "expiry": None,
        "error": _dig(body, "error"),
    }


def check_on_share(
    state: SandboxState, version: str, request: Request, body: dict[str, Any] | None
) -> JSONResponse | None:
    """None when the call is one the real gateway would accept, else the error it would answer."""
    if not state.session_valid(_bearer(request)):
        return _invalid_credentials()
    if not request.headers.get("x-cm-id"):
        return _abdm_error(400, "ABDM-1006", "X-CM-ID header is required")
    request_id = header_value(request.headers, "REQUEST-ID")
    if version == "v3" or request_id:
        if not request_id:
            return _abdm_error(400, "ABDM-1006", "REQUEST-ID header is required")
        stamp = parse_timestamp(header_value(request.headers, "TIMESTAMP"))
        if stamp is None:
            return _abdm_error(400, "ABDM-1006", "TIMESTAMP header is missing or not ISO-8601")
        if abs(stamp.timestamp() - time.time()) > MAX_CLOCK_SKEW_S:
            return _abdm_error(400, "ABDM-2402", "TIMESTAMP is too far from the gateway's clock")
        if not state.remember_request_id(request_id):
            return _abdm_error(400, "ABDM-2404", f"REQUEST-ID {request_id} was already used")
    if body is None:
        return _abdm_error(400, "ABDM-1006", "body must be a JSON object")
    summary = summarise_on_share(version, body)
    if not isinstance(summary["requestId"], str) or not summary["requestId"]:
        where = "response.requestId" if version == "v3" else "resp.requestId"
        return _abdm_error(400, "ABDM-1006", f"{where} is required")
    if ("acknowledgement" in body) == ("error" in body):
        return _abdm_error(400, "ABDM-1006", "exactly one of acknowledgement and error is required")
    if "error" in body:
        if not isinstance(_dig(body, "error", "code"), str | int):
            return _abdm_error(400, "ABDM-1006", "error.code is required")
        return None
    if not isinstance(summary["tokenNumber"], str) or not summary["abhaAddress"]:
        return _abdm_error(
            400, "ABDM-1006", "acknowledgement needs a string tokenNumber and the ABHA address"
        )
    if version == "v3" and not (isinstance(summary["expiry"], str) and summary["expiry"].isdigit()):
        return _abdm_error(400, "ABDM-1006", "acknowledgement.profile.expiry must be a string of seconds")
    if version != "v3" and not (isinstance(body.get("requestId"), str) and body.get("timestamp")):
        return _abdm_error(400, "ABDM-1006", "requestId and timestamp are required")
    return None


async def _receive_on_share(state: SandboxState, version: str, request: Request) -> Response:
    fault = state.take_fault()
    if fault.mode == "slow":
        await asyncio.sleep(fault.delay_s)
    raw = await request.body()
    body = _json_object(raw)
    answer: JSONResponse | None
    if fault.mode == "5xx":
        answer = _abdm_error(503, "ABDM-1024", "Service unavailable (sandbox fault)")
    elif fault.mode == "401":
        answer = _invalid_credentials()
    else:
        answer = check_on_share(state, version, request, body)
    state.record_on_share(
        {
            "version": version,
            "path": request.scope["path"],
            "answered": answer.status_code if answer else 202,
            "problem": json.loads(bytes(answer.body)) if answer else None,
            "fault": fault.mode,
            "outboundRequestId": header_value(request.headers, "REQUEST-ID"),
            **summarise_on_share(version, body),
            "body": body if body is not None else raw.decode("utf-8", "replace")[:2000],
        }
    )
    return answer or Response(status_code=202)


def _sessions_answer(state: SandboxState, body: dict[str, Any] | None) -> JSONResponse:
    if body is None:
        return _abdm_error(400, "ABDM-1006", "body must be a JSON object")
    grant = body.get("grantType", "client_credentials")
    if grant != "client_credentials":
        return _abdm_error(400, "ABDM-1006", "grantType must be client_credentials")
    answer = state.issue_session(body.get("clientId"), body.get("clientSecret"))
    if answer is None:
        return JSONResponse(
            {
                "error": "unauthorized_client",
                "error_description": "Invalid client or Invalid client credentials",
            },
            status_code=401,
        )
    return JSONResponse(answer)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "<td>–</td>"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"<td>{html.escape(text)}</td>"


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).strftime("%H:%M:%S")


def render_page(state: SandboxState) -> str:
    rows = []
    for r in state.on_shares():
        latency = f"{r['latency_ms']} ms" if "latency_ms" in r else None
        cells = [
            _when(r["received_at"]),
            r["version"],
            r["answered"],
            r.get("tokenNumber"),
            r.get("abhaAddress"),
        ]
        cells += [r.get("context"), r.get("requestId"), latency, r.get("error") or r.get("problem")]
        rows.append("<tr>" + "".join(_cell(c) for c in cells) + "</tr>")
    sent = []
    for s in state.shares_sent()[:50]:
        cells = [_when(s["sent_at"]), s["version"], s["status"], s["hipId"], s["counter"], s["abhaAddress"]]
        sent.append("<tr>" + "".join(_cell(c) for c in [*cells, s["requestId"]]) + "</tr>")
    fault = state.fault_info()
    empty = '<tr><td colspan="9">none yet</td></tr>'
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="3"><title>ABDM gateway sandbox</title>
<style>body{{font:14px system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;font-size:13px}}th{{background:#f3f3f3}}
.k{{color:#666}}</style></head><body>
<h1>ABDM gateway sandbox</h1>
<p class="k">Signing key kid <code>{html.escape(state.kid)}</code> · fault mode
<b>{html.escape(str(fault["mode"]))}</b> · bridge URL {html.escape(state.bridge_url or "not registered")}
· <a href="/api/on-shares">JSON</a> · <a href="/docs">API</a></p>
<h2>On-shares received (newest first)</h2><table><tr><th>time</th><th>version</th><th>answered</th>
<th>token</th><th>ABHA address</th><th>counter (context)</th><th>requestId</th><th>latency</th>
<th>error</th></tr>{"".join(rows) or empty}</table>
<h2>Shares sent</h2><table><tr><th>time</th><th>version</th><th>HIP answered</th><th>HIP id</th>
<th>counter</th><th>ABHA address</th><th>requestId</th></tr>{"".join(sent) or empty}</table>
</body></html>"""


# The gateway's on-share endpoints, by path, with the on-share shape each one takes.
ON_SHARE_PATHS: dict[str, Literal["v3", "v1"]] = {ON_SHARE_V3_PATH: "v3", ON_SHARE_V1_PATH: "v1"}


class OnShareReceiver:
    """Takes a POST to one of the `ON_SHARE_PATHS` straight to `_receive_on_share`, ahead of the
    middleware stack and FastAPI's routing and dependency solving (`token_service.fast_routes`).

    Beside the service (demos, the benchmark) the sandbox receives one on-share per share, and on the
    same cores: FastAPI's layers around the handler were about a third of its CPU per on-share. The
    checks and the record are the same code as the routes'; the routes stay registered for the OpenAPI
    page and answer other methods (405). An error the handler does not answer itself reaches the server,
    which answers 500.
    """

    def __init__(self, state: SandboxState, version: Literal["v3", "v1"]) -> None:
        self.state = state
        self.version = version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await _receive_on_share(self.state, self.version, Request(scope, receive))
        await response(scope, receive, send)


def create_sandbox_app(state: SandboxState) -> FastAPI:
    app = FastAPIOffline(title="ABDM gateway sandbox", version="1")  # its /docs works offline too
    app.state.sandbox = state
    for path, version in ON_SHARE_PATHS.items():
        fast_routes(app)[("POST", path)] = OnShareReceiver(state, version)

    @app.post("/api/hiecm/gateway/v3/sessions")
    async def sessions_v3(request: Request) -> JSONResponse:
        for name in ("REQUEST-ID", "TIMESTAMP", "X-CM-ID"):
            if not header_value(request.headers, name):
                return _abdm_error(400, "ABDM-1006", f"{name} header is required")
        return _sessions_answer(state, _json_object(await request.body()))

    @app.post("/gateway/v0.5/sessions")
    async def sessions_v05(request: Request) -> JSONResponse:
        return _sessions_answer(state, _json_object(await request.body()))

    @app.get("/api/hiecm/gateway/v3/certs")
    @app.get("/gateway/v0.5/certs")
    async def certs() -> dict[str, Any]:
        return state.jwks()

    @app.post(ON_SHARE_V3_PATH)
    async def on_share_v3(request: Request) -> Response:
        return await _receive_on_share(state, "v3", request)

    @app.post(ON_SHARE_V1_PATH)
    async def on_share_v1(request: Request) -> Response:
        return await _receive_on_share(state, "v1", request)

    @app.patch("/api/hiecm/gateway/v3/bridge/url")
    async def bridge_url(request: Request) -> Response:
        if not state.session_valid(_bearer(request)):
            return _invalid_credentials()
        url = _dig(_json_object(await request.body()), "url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _abdm_error(400, "ABDM-1006", "url must be an http(s) URL")
        state.bridge_url = url
        return Response(status_code=202)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(state))

    @app.get("/api/on-shares")
    async def list_on_shares() -> list[dict[str, Any]]:
        return state.on_shares()

    @app.delete("/api/on-shares", status_code=204)
    async def clear_on_shares() -> Response:
        state.clear_on_shares()
        return Response(status_code=204)

    @app.get("/api/faults")
    async def get_fault() -> dict[str, Any]:
        return state.fault_info()

    @app.post("/api/faults")
    async def set_fault(fault: FaultIn) -> dict[str, Any]:
        return state.set_fault(fault.mode, fault.until, fault.delay_s, fault.count)

    @app.get("/api/shares")
    async def list_shares() -> list[dict[str, Any]]:
        return state.shares_sent()

    @app.post("/api/shares")
    async def send_share(share: ShareIn) -> JSONResponse:
        """Post a signed share to a HIP, as the gateway does after a patient taps Share."""
        target = share.target or state.bridge_url
        if not target:
            return JSONResponse({"error": "no_target", "detail": "give target or register a bridge URL"}, 400)
        fields = share.model_dump(exclude={"target", "version", "hip_id", "counter", "abha_address"})
        try:
            status, request_id = await state.post_share(
                target, share.version, share.hip_id, share.counter, share.abha_address, **fields
            )
        except httpx.HTTPError as exc:
            return JSONResponse(
                {"error": "target_unreachable", "detail": f"{type(exc).__name__}: {exc}"}, 502
            )
        return JSONResponse({"status": status, "requestId": request_id})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def run_sandbox(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    state: SandboxState | None = None,
    key_path: str | Path | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve the sandbox until interrupted. Pass `key_path` so `sandbox scan` can sign with the same key."""
    from token_service.app import tune_gc

    sandbox = state or SandboxState.create(key_path, client_id=client_id, client_secret=client_secret)
    app = create_sandbox_app(sandbox)
    # It stands in for the gateway beside the service (demos, the benchmark): full collections that
    # walk every module's objects would stall its answers and its on-share receipts as they would a
    # worker's.
    tune_gc()
    uvicorn.run(app, host=host, port=port, log_level=log_level)
