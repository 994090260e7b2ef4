"""State of the local ABDM gateway stand-in: its RSA key, sessions, faults, and what it sent and received."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from token_service.abdm.gateway import gateway_timestamp
from token_service.abdm.sandbox_shares import SHARE_PATHS, SharePatient, share_body

__all__ = ["SHARE_PATHS", "Fault", "FaultMode", "SandboxState"]

FaultMode = Literal["ok", "5xx", "slow", "401"]
FAULT_MODES: tuple[FaultMode, ...] = ("ok", "5xx", "slow", "401")
DEFAULT_ISSUER = "http://127.0.0.1/auth/realms/central-registry"
# Keycloak gives the gateway's service account one fixed subject; ours is made up but stable.
GATEWAY_SUBJECT = "7d7a4bd0-9a6b-4d4b-9a43-6a1e1f4b0a55"
MAX_RECORDS = 500
DEFAULT_ADDRESS = {
    "line": "H No 12, Gali 4",
    "district": "South Delhi",
    "state": "Delhi",
    "pincode": "110029",
}


@dataclass
class Fault:
    """How the on-share receiver misbehaves: until a monotonic deadline, for `count` calls, or until reset."""

    mode: FaultMode = "ok"
    until: float | None = None
    delay_s: float = 0.0
    count: int | None = None


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def rsa_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 thumbprint: a kid that stays the same for the same key across restarts."""
    numbers = public_key.public_numbers()
    canonical = json.dumps(
        {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # the sandbox server and `sandbox scan` started together: use the winner's key
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            return key
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return loaded


class SandboxState:
    """Everything the sandbox app needs; thread-safe, because tests read it from outside the server thread."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        issuer: str = DEFAULT_ISSUER,
        session_ttl_s: int = 1200,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.private_key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = rsa_thumbprint(self.private_key.public_key())
        self.client_id = client_id
        self.client_secret = client_secret
        self.issuer = issuer
        self.session_ttl_s = session_ttl_s
        self.bridge_url: str | None = None
        self._wall = wall_clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._sessions: dict[str, float] = {}
        self._seen_request_ids: set[str] = set()
        self._fault = Fault()
        self._on_shares: list[dict[str, Any]] = []
        self._shares_sent: dict[str, dict[str, Any]] = {}

    @classmethod
    def create(cls, key_path: str | Path | None = None, **kwargs: Any) -> SandboxState:
        """A sandbox with a fresh key, or the key at `key_path` (created there, mode 0600, if missing)."""
        key = _load_or_create_key(Path(key_path)) if key_path else None
        return cls(key, **kwargs)

    # ---- keys and tokens ----

    def public_jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def _sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": kid or self.kid})

    def sign_gateway_jwt(
        self, claims_override: Mapping[str, Any] | None = None, ttl_s: int = 300, *, kid: str | None = None
    ) -> str:
        """A JWT as the gateway puts on its calls to us. An override value of None removes that claim."""
        now = int(self._wall())
        claims: dict[str, Any] = {
            "exp": now + ttl_s,
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": "account",
            "sub": GATEWAY_SUBJECT,
            "typ": "Bearer",
            "azp": "GATEWAY",
            "realm_access": {"roles": ["gateway", "offline_access", "uma_authorization"]},
            "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
            "scope": "openid",
            "clientId": "GATEWAY",
            "preferred_username": "service-account-gateway",
        }
        for name, value in (claims_override or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return self._sign(claims, kid)

    def issue_session(self, client_id: object, client_secret: object) -> dict[str, Any] | None:
        """The sessions answer, or None when credentials are configured and these do not match."""
        if self.client_id is not None and client_id != self.client_id:
            return None
        if self.client_secret is not None and client_secret != self.client_secret:
            return None
        now = self._wall()
        token = self._sign(
            {
                "exp": int(now) + self.session_ttl_s,
                "iat": int(now),
                "jti": str(uuid.uuid4()),
                "iss": self.issuer,
                "sub": f"service-account-{client_id}",
                "clientId": str(client_id),
                "realm_access": {"roles": ["hip", "hiu"]},
            }
        )
        with self._lock:
            self._sessions = {t: exp for t, exp in self._sessions.items() if exp > now}
            self._sessions[token] = now + self.session_ttl_s
        return {
            "accessToken": token,
            "expiresIn": self.session_ttl_s,
            "refreshExpiresIn": self.session_ttl_s * 2,
            "refreshToken": str(uuid.uuid4()),
            "tokenType": "bearer",
        }

    def session_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._sessions.get(token)
        return expires is not None and expires > self._wall()

    def revoke_sessions(self) -> None:
        """Forget every session token, as a gateway restart would: the next call gets a 401."""
        with self._lock:
            self._sessions.clear()

    def remember_request_id(self, request_id: str) -> bool:
        """False when this REQUEST-ID was used before (the gateway answers ABDM-2404)."""
        with self._lock:
            if request_id in self._seen_request_ids:
                return False
            self._seen_request_ids.add(request_id)
            return True

    # ---- faults ----

    def set_fault(
        self,
        mode: FaultMode,
        until_s: float | None = None,
        delay_s: float = 5.0,
        count: int | None = None,
    ) -> dict[str, Any]:
        if mode not in FAULT_MODES:
            raise ValueError(f"fault mode must be one of {', '.join(FAULT_MODES)}")
        deadline = self._monotonic() + until_s if until_s is not None else None
        with self._lock:
            self._fault = Fault(mode=mode, until=deadline, delay_s=delay_s, count=count)
        return self.fault_info()

    def fault_info(self) -> dict[str, Any]:
        with self._lock:
            fault = self._fault
            remaining = None if fault.until is None else max(0.0, fault.until - self._monotonic())
            # The deadline is on the server's monotonic clock, meaningless outside: report what is left.
            info = {k: v for k, v in asdict(fault).items() if k != "until"}
            return {**info, "remaining_s": remaining}

    def take_fault(self) -> Fault:
        """The fault for this call, counting it down; an expired or used-up fault reverts to ok."""
        with self._lock:
            fault = self._fault
            expired = fault.until is not None and self._monotonic() >= fault.until
            if fault.mode == "ok" or expired or fault.count == 0:
                self._fault = Fault()
                return Fault()
            if fault.count is not None:
                self._fault = Fault(fault.mode, fault.until, fault.delay_s, fault.count - 1)
            return fault

    # ---- records ----

    def record_on_share(self, record: dict[str, Any]) -> dict[str, Any]:
        record = {"received_at": self._wall(), **record}
        with self._lock:
            sent = self._shares_sent.get(str(record.get("requestId")))
            if sent is not None:
                record["share_sent_at"] = sent["sent_at"]
                record["latency_ms"] = round((record["received_at"] - sent["sent_at"]) * 1000)
            self._on_shares.append(record)
            del self._on_shares[:-MAX_RECORDS]
        return record

    def on_shares(self) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            return [dict(r) for r in reversed(self._on_shares)]

    def clear_on_shares(self) -> None:
        with self._lock:
            self._on_shares.clear()

    def shares_sent(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted((dict(s) for s in self._shares_sent.values()), key=lambda s: -s["sent_at"])

    # ---- shares, as the gateway sends them to the HIP ----

    def build_share(
        self,
        version: Literal["v3", "v1", "v0.5"],
        hip_id: str,
        counter: str,
        abha_address: str,
        name: str = "Ramesh Kumar",
        year_of_birth: int | None = 1979,
        request_id: str | None = None,
        *,
        gender: str | None = "M",
        month_of_birth: int | None = 8,
        day_of_birth: int | None = 14,
        abha_number: str | None = None,
        phone: str | None = "9876543210",
        address: Mapping[str, str | None] | None = None,
        patient_extra: Mapping[str, Any] | None = None,
        jwt_token: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body exactly as the gateway sends a share. v3 birth parts go as strings and v1.0
        ones as ints, as observed; `patient_extra` overrides or adds raw wire fields of the patient."""
        request_id = request_id or str(uuid.uuid4())
        stamp = gateway_timestamp()
        headers = {
            "Authorization": f"Bearer {jwt_token or self.sign_gateway_jwt()}",
            "X-HIP-ID": hip_id,
            "Content-Type": "application/json",
        }
        if version == "v3":
            headers["REQUEST-ID"] = request_id
            headers["TIMESTAMP"] = stamp
        patient = SharePatient(
            abha_address,
            name,
            gender,
            year_of_birth,
            month_of_birth,
            day_of_birth,
            abha_number,
            phone,
            address,
        )
        body = share_body(version, hip_id, counter, patient, request_id, stamp, patient_extra)
        return headers, json.dumps(body, ensure_ascii=False).encode("utf-8")

    async def post_share(
        self,
        target_base_url: str,
        version: Literal["v3", "v1", "v0.5"],
        hip_id: str,
        counter: str,
        abha_address: str,
        *,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        **share_kwargs: Any,
    ) -> tuple[int, str]:
        """POST a share to the HIP bridge at `target_base_url`; returns (HTTP status, request id)."""
        request_id = share_kwargs.pop("request_id", None) or str(uuid.uuid4())
        headers, body = self.build_share(
            version, hip_id, counter, abha_address, request_id=request_id, **share_kwargs
        )
        url = target_base_url.rstrip("/") + SHARE_PATHS[version]
        # Recorded before sending: the HIP's on-share may well arrive before its 202 reaches us.
        with self._lock:
            self._shares_sent[request_id] = {
                "sent_at": self._wall(),
                "requestId": request_id,
                "version": version,
                "target": url,
                "hipId": hip_id,
                "counter": counter,
                "abhaAddress": abha_address,
                "status": None,
            }
            if len(self._shares_sent) > MAX_RECORDS:
                oldest = min(self._shares_sent, key=lambda k: self._shares_sent[k]["sent_at"])
                del self._shares_sent[oldest]
        try:
            if http is None:
                async with httpx.AsyncClient() as client:
                    response = await client.post(url, content=body, headers=headers, timeout=timeout_s)
            else:
                response = await http.post(url, content=body, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            self._set_sent_status(request_id, f"failed: {type(exc).__name__}")
            raise
        self._set_sent_status(request_id, response.status_code)
        return response.status_code, request_id

    def _set_sent_status(self, request_id: str, status: int | str) -> None:
        with self._lock:
            if request_id in self._shares_sent:
                self._shares_sent[request_id]["status"] = status
