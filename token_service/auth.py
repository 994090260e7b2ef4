"""Staff and device authentication: argon2 password hashes, signed session tokens, hashed device tokens."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from token_service.errors import Forbidden, Unauthorized

_hasher = PasswordHasher()
ROLES = ("admin", "clerk")
DEVICE_KINDS = ("board", "kiosk", "printer")
# A dummy hash verified when the user does not exist, so a wrong username costs as much as a wrong
# password (no user enumeration by timing).
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_device_token() -> tuple[str, str]:
    """A fresh device token and the hash we store (SHA-256: the token has 256 bits of entropy)."""
    token = "dev_" + secrets.token_urlsafe(32)
    return token, hash_device_token(token)


def hash_device_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a staff user or a device."""

    kind: str  # user | device
    name: str
    role: str  # admin | clerk | board | kiosk | printer
    hip_id: str | None  # None: every facility (a global admin)
    counters: tuple[str, ...] = field(default_factory=tuple)
    device_id: int | None = None
    session: Session | None = None  # a staff login: which session (checked against Redis per request)

    def can_access(self, hip_id: str) -> bool:
        return self.hip_id is None or self.hip_id == hip_id

    def require_facility(self, hip_id: str) -> None:
        if not self.can_access(hip_id):
            raise Forbidden(f"no access to facility {hip_id}")

    def require_role(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(f"this needs the role {' or '.join(roles)}")

    def allowed_counters(self) -> list[str] | None:
        """None: every counter (admins, clerks without an assignment)."""
        if self.role == "clerk" and self.counters:
            return list(self.counters)
        return None

    def require_counter(self, hip_id: str, counter: str) -> None:
        self.require_facility(hip_id)
        allowed = self.allowed_counters()
        if allowed is not None and counter not in allowed:
            raise Forbidden(f"you are not assigned to counter {counter}")


@dataclass(frozen=True)
class Session:
    """What a session token names: the user, the session id (its `jti`) and its expiry (unix s)."""

    user_id: int
    session_id: str
    expires: int


def new_session(secret: str, user_id: int, username: str, ttl_s: int) -> tuple[str, Session]:
    now = int(time.time())
    # jti: every login mints a distinct token, even two in the same second (no reuse, no fixation); it
    # is also the session's id in Redis, where logout and revocation remove it (token_service.sessions).
    session = Session(user_id, secrets.token_urlsafe(12), now + ttl_s)
    claims = {"sub": str(user_id), "usr": username, "iat": now, "exp": session.expires, "typ": "session",
              "jti": session.session_id}  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256"), session


def issue_session(secret: str, user_id: int, username: str, ttl_s: int) -> str:
    return new_session(secret, user_id, username, ttl_s)[0]


def read_session_claims(secret: str, token: str) -> Session:
    """The session a token names, if we signed it and it has not expired (revocation is checked apart)."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "jti"]})
    except jwt.PyJWTError as exc:
        raise Unauthorized("session expired or invalid; log in again") from exc
    if claims.get("typ") != "session":
        raise Unauthorized("not a session token")
    try:
        return Session(int(claims["sub"]), str(claims["jti"]), int(claims["exp"]))
    except (TypeError, ValueError) as exc:
        raise Unauthorized("session expired or invalid; log in again") from exc


def read_session(secret: str, token: str) -> int:
    return read_session_claims(secret, token).user_id
