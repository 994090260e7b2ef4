"""The walk-in kiosk page: choose a department (optionally scan an ABHA card), get a token and a slip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from kiosk_ui.i18n import LANG_NAMES, LANGS, Translator, normalise_lang, render
from token_service.api.deps import get_state
from token_service.directory import FacilityConfig
from token_service.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
router = APIRouter(include_in_schema=False)


def _json_for_html(payload: dict[str, Any]) -> str:
    """JSON inside <script type="application/json">: `<` escaped so no value can close the element."""
    return json.dumps(payload, ensure_ascii=False).replace("<", "\\u003c")


def default_language(cfg: FacilityConfig, requested: str | None) -> str:
    """`?lang=` if given, else the facility's first language: a shared kiosk must not keep the last
    patient's choice (so the `opd_lang` cookie is deliberately not read here)."""
    chosen = normalise_lang(requested)
    if chosen:
        return chosen
    return next((lang for lang in cfg.facility.languages or [] if lang in LANGS), "en")


def kiosk_languages(cfg: FacilityConfig, lang: str) -> list[str]:
    """The language buttons: the facility's languages in its order (a hospital in Patna offers no
    Gujarati), or all when it names none; the page's own language always among them."""
    chosen = [code for code in dict.fromkeys(cfg.facility.languages or []) if code in LANGS] or list(LANGS)
    return chosen if lang in chosen else [*chosen, lang]


def page_data(cfg: FacilityConfig, lang: str) -> dict[str, Any]:
    facility = cfg.facility
    counters = [
        {
            "code": c.code,
            "prefix": c.prefix,
            "names": {code: (c.names or {}).get(code) or c.name for code in LANGS},
            "department": c.department,
        }
        for c in sorted(cfg.counters.values(), key=lambda c: c.code)
        if c.active
    ]
    return {
        "hip_id": facility.hip_id,
        "lang": lang,
        "default_lang": lang,
        "facility": {code: (facility.names or {}).get(code) or facility.name for code in LANGS},
        "counters": counters,
        "strings": {code: Translator(code).subset("kiosk.") for code in LANGS},
    }


@router.get("/kiosk/{hip_id}")
async def kiosk_page(request: Request, hip_id: str) -> Response:
    state = await get_state(request)
    try:
        cfg = await state.directory.get(hip_id)
    except NotFound:
        t = Translator(normalise_lang(request.query_params.get("lang")) or "en")
        return render(request, "message.html", {"message": t("app.not_found")}, status_code=404)
    lang = default_language(cfg, request.query_params.get("lang"))
    data = page_data(cfg, lang)
    ctx = {
        "facility_name": data["facility"][lang],
        "counters": data["counters"],
        "page_data": _json_for_html(data),
        "lang_names": LANG_NAMES,
        "kiosk_langs": kiosk_languages(cfg, lang),
    }
    return render(request, "kiosk.html", ctx, lang=lang)


def install(app: FastAPI) -> None:
    app.include_router(router)
    # The pages module normally serves /static; the kiosk page must still work without it.
    if not any(getattr(route, "path", None) == "/static" for route in app.routes):
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
