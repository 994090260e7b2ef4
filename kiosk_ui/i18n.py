"""Page translations (en/hi/gu catalogs merged per language folder), locale formatting and page rendering."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.dates import format_datetime, format_time
from babel.numbers import format_decimal
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse, Response

HERE = Path(__file__).resolve().parent
LOCALES_DIR = HERE / "locales"
TEMPLATES_DIR = HERE / "templates"

LANGS: tuple[str, ...] = ("en", "hi", "gu")
DEFAULT_LANG = "en"
LANG_NAMES: dict[str, str] = {"en": "English", "hi": "हिंदी", "gu": "ગુજરાતી"}
# Indian English keeps lakh grouping (1,00,000), which is what staff expect on reports.
BABEL_LOCALES: dict[str, str] = {"en": "en_IN", "hi": "hi_IN", "gu": "gu_IN"}
LANG_COOKIE = "opd_lang"
CSRF_COOKIE = "opd_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

# Only our own origin: every script is a file (no inline code), audio clips are fetched into blob: URLs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def _flatten(prefix: str, value: Any, out: dict[str, str], source: Path) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out, source)
    elif isinstance(value, str):
        out[prefix] = value
    else:
        raise ValueError(f"{source}: {prefix!r} must be a string or an object of strings")


def load_language(lang: str, root: Path = LOCALES_DIR) -> dict[str, str]:
    """All ``*.json`` files of one language folder merged (one file per page; nested keys join with dots)."""
    merged: dict[str, str] = {}
    for path in sorted((root / lang).glob("*.json")):
        part: dict[str, str] = {}
        _flatten("", json.loads(path.read_text(encoding="utf-8")), part, path)
        clash = sorted(set(part) & set(merged))
        if clash:
            raise ValueError(f"{path}: keys already defined by another file: {', '.join(clash[:5])}")
        merged.update(part)
    return merged


@lru_cache(maxsize=1)
def catalogs() -> dict[str, dict[str, str]]:
    return {lang: load_language(lang) for lang in LANGS}


def normalise_lang(value: str | None) -> str | None:
    if not value:
        return None
    code = value.strip().lower().replace("_", "-").split("-", 1)[0]
    return code if code in LANGS else None


def pick_lang(request: Request) -> str:
    """``?lang=`` wins, then the ``opd_lang`` cookie, then the browser's Accept-Language, then English."""
    query, cookie = request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)
    chosen = normalise_lang(query) or normalise_lang(cookie)
    if chosen:
        return chosen
    for part in request.headers.get("accept-language", "").split(","):
        found = normalise_lang(part.split(";", 1)[0])
        if found:
            return found
    return DEFAULT_LANG


class Translator:
    """``t(key, **params)`` for one language; numbers in params are formatted for the locale."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGS else DEFAULT_LANG
        self.locale = BABEL_LOCALES[self.lang]
        self._own = catalogs()[self.lang]
        self._fallback = catalogs()[DEFAULT_LANG]

    def __call__(self, key: str, **params: Any) -> str:
        text = self._own.get(key) or self._fallback.get(key) or key
        if not params:
            return text
        shown = {k: self.number(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                 for k, v in params.items()}  # fmt: skip
        try:
            return text.format_map(shown)
        except (KeyError, IndexError, ValueError):
            return text

    def number(self, value: float) -> str:
        return format_decimal(value, locale=self.locale)

    def time(self, value: datetime, tz: str = "Asia/Kolkata") -> str:
        return format_time(value, format="short", tzinfo=_zone(tz), locale=self.locale)

    def datetime(self, value: datetime, tz: str = "Asia/Kolkata") -> str:
        return format_datetime(value, format="short", tzinfo=_zone(tz), locale=self.locale)

    def subset(self, *prefixes: str) -> dict[str, str]:
        """The strings a page's script needs (keys under the given prefixes), with English filling gaps."""
        keys = {k for k in self._fallback if k.startswith(prefixes)}
        return {k: self._own.get(k) or self._fallback[k] for k in sorted(keys)}

    def localized(self, names: Mapping[str, str] | None, default: str) -> str:
        """A facility/counter name in this language when the admin gave one."""
        return (names or {}).get(self.lang) or default


def _zone(tz: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
_ASSET_VERSION = str(int(time.time()))


def static_url(path: str) -> str:
    """Static asset URL with a per-start version so a board picks up new files after an upgrade."""
    return f"/static/{path}?v={_ASSET_VERSION}"


templates.env.globals.update(static=static_url, LANGS=LANGS, LANG_NAMES=LANG_NAMES, CSRF_FIELD=CSRF_FIELD)


def csrf_token(request: Request) -> str:
    """The double-submit token: the browser's cookie if it has one, else a fresh one set by `render`."""
    existing = request.cookies.get(CSRF_COOKIE, "")
    if 20 <= len(existing) <= 100 and existing.isascii():
        return existing
    token: str | None = getattr(request.state, "csrf_new", None)
    if token is None:
        token = secrets.token_urlsafe(24)
        request.state.csrf_new = token
    return token


def apply_page_headers(response: Response, request: Request) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    fresh: str | None = getattr(request.state, "csrf_new", None)
    if fresh:
        # Readable by our scripts (they echo it in a header), unreadable and unsent cross-site.
        response.set_cookie(CSRF_COOKIE, fresh, httponly=False, samesite="strict", path="/")
    return response


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    lang: str | None = None,
) -> HTMLResponse:
    """Render a page with ``lang``, ``t``, the CSRF token and security headers (admin pages use it too)."""
    chosen = lang or pick_lang(request)
    t = Translator(chosen)
    ctx: dict[str, Any] = {
        "request": request,
        "lang": chosen,
        "t": t,
        "csrf_token": csrf_token(request),
        "path": request.url.path,
    }
    ctx.update(context or {})
    response = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    apply_page_headers(response, request)
    return response
