"""Property tests for what parses attacker-controlled text: sessions, redirects, rate-limit keys, deep JSON."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk_ui.routes import _safe_next
from token_service.abdm.abha_card import AbhaCardError, parse_abha_card
from token_service.abdm.schemas import ShareParseError, parse_share
from token_service.auth import issue_session, read_session
from token_service.errors import Unauthorized
from token_service.ratelimit import rule_for, subject_key
from token_service.retention import MIN_DAYS, cutoff_for

SECRET = "unit-test-secret-key-0123456789-abcdef"
HEADERS = {"REQUEST-ID": "5f7a535d-a3fd-416b-b069-c97d021fbacd", "TIMESTAMP": "2024-05-01T10:00:00.123Z",
           "X-HIP-ID": "IN0710000123"}  # fmt: skip
DEPTHS = (1_000, 10_000, 100_000)


def _nested(depth: int, shape: str) -> str:
    return ("[" * depth + "]" * depth) if shape == "array" else ('{"a":' * depth + "1" + "}" * depth)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("shape", ["array", "object"])
@pytest.mark.parametrize("version", ["v3", "v1", "v0.5"])
def test_share_parser_refuses_deep_nesting(version: str, shape: str, depth: int) -> None:
    """Balanced, valid JSON nested past Python's recursion limit: a parse error, never RecursionError."""
    with pytest.raises(ShareParseError):
        parse_share(version, _nested(depth, shape).encode(), HEADERS)  # type: ignore[arg-type]
    wrapped = '{"profile": {"patient": ' + _nested(depth, shape) + "}}"
    with pytest.raises(ShareParseError):
        parse_share(version, wrapped.encode(), HEADERS)  # type: ignore[arg-type]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("shape", ["array", "object"])
def test_abha_card_refuses_deep_nesting(shape: str, depth: int) -> None:
    with pytest.raises(AbhaCardError):
        parse_abha_card(_nested(depth, shape))
    with pytest.raises(AbhaCardError):
        parse_abha_card('{"hidn": "91-1234-5678-9012", "name": ' + _nested(depth, shape) + "}")


@settings(max_examples=400, deadline=None)
@given(
    token=st.text(max_size=300)
    | st.from_regex(r"\A[A-Za-z0-9_-]{0,60}\.[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{0,60}\Z")
)
def test_read_session_only_accepts_or_refuses(token: str) -> None:
    try:
        user_id = read_session(SECRET, token)
    except Unauthorized:
        return
    raise AssertionError(f"accepted a forged session for user {user_id}: {token!r}")


@settings(max_examples=100, deadline=None)
@given(user_id=st.integers(1, 10**9), flip=st.integers(0, 10_000))
def test_a_tampered_session_is_refused(user_id: int, flip: int) -> None:
    token = issue_session(SECRET, user_id, "clerk", 3600)
    assert read_session(SECRET, token) == user_id
    head, claims, sig = token.split(".")
    i = flip % len(sig)
    # Flip a signature character to another base64url one (the last one can alias: skip it).
    if i < len(sig) - 1:
        forged = f"{head}.{claims}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1 :]}"
        with pytest.raises(Unauthorized):
            read_session(SECRET, forged)
    with pytest.raises(Unauthorized):
        read_session(SECRET + "x", token)
    with pytest.raises(Unauthorized):
        read_session(SECRET, f"{head}.{claims}.")


def test_an_expired_session_is_refused() -> None:
    token = issue_session(SECRET, 7, "clerk", -1)
    with pytest.raises(Unauthorized):
        read_session(SECRET, token)
    assert time.time() > 0


def _browser_target(location: str) -> str:
    """What a browser makes of a relative Location: tabs/newlines dropped, backslashes read as slashes."""
    return re.sub(r"[\t\n\r]", "", location).replace("\\", "/")


@settings(max_examples=600, deadline=None)
@given(
    value=st.text(alphabet=st.sampled_from("/\\\t\n\r:.@%?#aZ09- evil.com"), max_size=40)
    | st.text(max_size=60)
)
def test_login_redirect_target_stays_on_this_site(value: str) -> None:
    from starlette.responses import RedirectResponse

    target = _safe_next(value, "/console")
    location = RedirectResponse(target).headers["location"]
    seen = _browser_target(location)
    assert seen.startswith("/") and not seen.startswith("//"), (value, location)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["login-user", "login-ip", "status", "issue"]), subject=st.text(max_size=500))
def test_rate_limit_keys_are_fixed_size_and_share_a_slot(kind: str, subject: str) -> None:
    key = subject_key(kind, subject)
    assert re.fullmatch(rf"opd:rl:\{{{re.escape(kind)}:[0-9a-f]{{32}}\}}", key)
    assert subject_key(kind, subject) == key and (not subject or subject_key(kind, subject + "x") != key)


class _Settings:
    rate_limit_status_per_minute = 300
    rate_limit_issue_per_minute = 30


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"]),
    path=st.text(max_size=80)
    | st.sampled_from(["/t/x", "/api/status/x", "/api/facilities/H/counters/C/tokens"]),
    auth=st.none() | st.text(max_size=40) | st.just("Bearer dev_abc") | st.just("bearer   dev_x "),
    client=st.none() | st.tuples(st.text(max_size=20), st.integers(0, 65535)),
)
def test_rate_limit_rules_never_fail(method: str, path: str, auth: str | None, client: Any) -> None:
    headers = [] if auth is None else [(b"authorization", auth.encode("utf-8", "surrogatepass"))]
    scope = {"type": "http", "method": method, "path": path, "headers": headers, "client": client}
    rule = rule_for(scope, _Settings())
    if rule is not None:
        limit, subject = rule
        assert limit.name in ("status", "issue") and subject
        if limit.name == "status":
            assert method in ("GET", "HEAD") and path.startswith(("/t/", "/api/status/"))
        else:
            assert method == "POST" and subject.startswith("dev_")


@settings(max_examples=100, deadline=None)
@given(days=st.integers(-10, 10_000))
def test_retention_floor(days: int) -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 22, tzinfo=UTC)
    if days < MIN_DAYS:
        with pytest.raises(ValueError):
            cutoff_for(days, now)
    else:
        assert (now - cutoff_for(days, now)).days == days


def test_deep_json_helpers_are_what_they_claim() -> None:
    assert json.loads(_nested(50, "object"))["a"]["a"]["a"]
    with pytest.raises(RecursionError):
        json.loads(_nested(100_000, "array"))  # the reason the parsers above must guard
