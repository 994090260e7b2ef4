"""Redis rate limits shared by every worker: fixed windows for public reads and issue, lockouts for login."""

from __future__ import annotations

import hashlib
import logging
import math
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from token_service.errors import TooManyRequests, Unavailable

log = logging.getLogger("token_service.ratelimit")

# Every key of one subject (a username, an address, a device credential) shares a hash tag, so the
# lockout script touches one Redis Cluster slot; subjects are hashed so no caller-chosen text (or
# plaintext credential) ever becomes part of a key.
ROOT = "opd:rl"

# One fixed window per key: INCR, arm the expiry on the first hit, and repair a key that lost its
# expiry (e.g. restored from an old snapshot) so it can never count forever.
_HIT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""

# KEYS: failures, level, lock. ARGV: window ms, threshold, base lock ms, max lock ms, level ttl ms.
# A subject that was locked once (level > 0) is locked again by its next failure, each time twice as
# long: the lock holds an attacker to a handful of guesses a day while a typo costs a minute.
_FAIL = """
local f = redis.call('INCR', KEYS[1])
if f == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local level = tonumber(redis.call('GET', KEYS[2]) or '0')
if f < tonumber(ARGV[2]) and level == 0 then return 0 end
local ms = math.min(tonumber(ARGV[3]) * (2 ^ level), tonumber(ARGV[4]))
redis.call('SET', KEYS[3], '1', 'PX', ms)
redis.call('SET', KEYS[2], level + 1, 'PX', ARGV[5])
redis.call('DEL', KEYS[1])
return ms
"""


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests per ``window_s`` seconds for one subject."""

    name: str
    count: int
    window_s: int


@dataclass(frozen=True)
class Lockout:
    """``threshold`` failures within ``window_s`` lock the subject for ``base_s``, doubling up to ``max_s``."""

    name: str
    threshold: int
    window_s: int = 15 * 60
    base_s: int = 60
    max_s: int = 3600
    level_ttl_s: int = 24 * 3600


LOGIN_USER = Lockout("login-user", threshold=5)
# Higher than per user: a hospital's desks often share one public address behind NAT, and one
# clerk's typos must not lock everyone else out. It still stops spraying many usernames.
LOGIN_IP = Lockout("login-ip", threshold=20)
# Generous: a waiting hall on one Wi-Fi shares an address; this stops scraping public ids, not patients.
STATUS_PER_MINUTE = 300
ISSUE_PER_MINUTE = 30

# The caller's address for code that has no request at hand (the page login form calls the API's
# `login`); set for every request by `RateLimits`, so both ways in share one per-address budget.
current_client_ip: ContextVar[str | None] = ContextVar("current_client_ip", default=None)

_ISSUE_PATH = re.compile(r"^/api/facilities/[^/]+/counters/[^/]+/tokens/?$")


class RateLimited(TooManyRequests):
    """429 with the seconds to wait; rendered with a ``Retry-After`` header by `rate_limited_response`."""

    def __init__(self, detail: str, retry_after_ms: int) -> None:
        self.retry_after = max(1, math.ceil(retry_after_ms / 1000))
        super().__init__(detail, extra={"retry_after": self.retry_after})


def rate_limited_response(exc: RateLimited) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.code, "detail": exc.detail, **exc.extra}
    return JSONResponse(body, status_code=429, headers={"Retry-After": str(exc.retry_after)})


def subject_key(kind: str, subject: str) -> str:
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{ROOT}:{{{kind}:{digest}}}"


class RateLimiter:
    """Counters in Redis, so every worker process (and every host) enforces the same budget."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._hit = redis.register_script(_HIT)
        self._fail = redis.register_script(_FAIL)

    async def hit(self, limit: Limit, subject: str) -> None:
        """Count one request; raise `RateLimited` once the window's budget is spent."""
        key = subject_key(limit.name, subject) + ":n"
        count, ttl = await self._hit(keys=[key], args=[limit.window_s * 1000])
        if int(count) > limit.count:
            raise RateLimited(f"more than {limit.count} requests in {limit.window_s} s; slow down", int(ttl))

    async def check_locked(self, policy: Lockout, subject: str) -> None:
        ttl = int(await self.redis.pttl(subject_key(policy.name, subject) + ":lock"))
        if ttl > 0:
            raise RateLimited("too many failed logins; try again later", ttl)

    async def failed(self, policy: Lockout, subject: str) -> int:
        """Record a failure; the lock length in ms when this failure locked the subject, else 0."""
        base = subject_key(policy.name, subject)
        args = [policy.window_s * 1000, policy.threshold, policy.base_s * 1000, policy.max_s * 1000,
                policy.level_ttl_s * 1000]  # fmt: skip
        return int(await self._fail(keys=[base + ":f", base + ":lvl", base + ":lock"], args=args))

    async def reset(self, policy: Lockout, subject: str) -> None:
        base = subject_key(policy.name, subject)
        await self.redis.delete(base + ":f", base + ":lvl", base + ":lock")


class LoginThrottle:
    """Per-username and per-address lockouts around password checks.

    Fails closed: without Redis we cannot count guesses, so logins answer 503 rather than allow
    unlimited attempts (as do requests with a session, whose revocation is checked in Redis).
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    @staticmethod
    def _user(username: str) -> str:
        return username.strip().casefold()[:64]

    async def check(self, username: str, client_ip: str | None) -> None:
        await self._guard(self._check(username, client_ip))

    async def _check(self, username: str, client_ip: str | None) -> None:
        if client_ip:
            await self.limiter.check_locked(LOGIN_IP, client_ip)
        await self.limiter.check_locked(LOGIN_USER, self._user(username))

    async def failed(self, username: str, client_ip: str | None) -> None:
        await self._guard(self._failed(username, client_ip))

    async def _failed(self, username: str, client_ip: str | None) -> None:
        locked = await self.limiter.failed(LOGIN_USER, self._user(username))
        if client_ip:
            locked = max(locked, await self.limiter.failed(LOGIN_IP, client_ip))
        if locked:
            log.warning("login locked for %d s after repeated failures", locked // 1000)

    async def succeeded(self, username: str, client_ip: str | None) -> None:
        await self._guard(self._succeeded(username, client_ip))

    async def _succeeded(self, username: str, client_ip: str | None) -> None:
        await self.limiter.reset(LOGIN_USER, self._user(username))
        if client_ip:
            await self.limiter.reset(LOGIN_IP, client_ip)

    @staticmethod
    async def _guard(aw: Any) -> None:
        try:
            await aw
        except (RedisError, OSError) as exc:
            raise Unavailable("login is unavailable while the queue store is down; retry shortly") from exc


def limiter_of(state: Any) -> RateLimiter:
    """The worker's limiter, created on first use over the app's Redis client."""
    limiter: RateLimiter | None = state.extras.get("rate_limiter")
    if limiter is None:
        limiter = state.extras["rate_limiter"] = RateLimiter(state.redis)
    return limiter


def client_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client and client[0] else "unknown"


def _device_credential(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text = bytes(value).decode("latin-1").strip()
            if text[:7].lower() == "bearer " and text[7:].strip().startswith("dev_"):
                return text[7:].strip()
    return None


def _per_minute(settings: Any, name: str, default: int) -> int:
    """A budget from the settings when configured there (0 turns it off), else the default."""
    return int(getattr(settings, name, default))


def rule_for(scope: Scope, settings: Any) -> tuple[Limit, str] | None:
    """Which budget a request spends, and whose: None for everything not limited here."""
    path: str = scope["path"]
    method: str = scope["method"]
    if method in ("GET", "HEAD") and (path.startswith("/t/") or path.startswith("/api/status/")):
        count = _per_minute(settings, "rate_limit_status_per_minute", STATUS_PER_MINUTE)
        return (Limit("status", count, 60), client_ip(scope)) if count > 0 else None
    if method == "POST" and _ISSUE_PATH.match(path):
        # Per kiosk device token: one stuck or abused kiosk cannot flood a counter's queue. Staff are
        # not limited here: a clerk's issue rate is bounded by the patients in front of the desk.
        device = _device_credential(scope)
        count = _per_minute(settings, "rate_limit_issue_per_minute", ISSUE_PER_MINUTE)
        return (Limit("issue", count, 60), device) if device and count > 0 else None
    return None


class RateLimits:
    """ASGI middleware for the request-rate budgets (status reads, walk-in issue).

    Fails open: if Redis is down the status page is the one thing patients can still open, and issuing
    needs Redis anyway (it answers 503 by itself).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            current_client_ip.set(client_ip(scope) if scope.get("client") else None)
            state = getattr(scope["app"].state, "opd", None) if "app" in scope else None
            rule = rule_for(scope, state.settings) if state is not None else None
            if rule is not None and state is not None:
                try:
                    await limiter_of(state).hit(*rule)
                except RateLimited as exc:
                    await rate_limited_response(exc)(scope, receive, send)
                    return
                except (RedisError, OSError) as exc:
                    log.warning("rate limit skipped, Redis unavailable: %r", exc)
        await self.app(scope, receive, send)
