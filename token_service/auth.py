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


def issue_session(secret: str, user_id: int, username: str, ttl_s: int) -> str:
    now = int(time.time())
    # jti: every login mints a distinct token, even two in the same second (no reuse, no fixation).
    claims = {"sub": str(user_id), "usr": username, "iat": now, "exp": now + ttl_s, "typ": "session",
              "jti": secrets.token_urlsafe(12)}  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


def read_session(secret: str, token: str) -> int:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError as exc:
        raise Unauthorized("session expired or invalid; log in again") from exc
    if claims.get("typ") != "session":
        raise Unauthorized("not a session token")
    return int(claims["sub"])
