"""Every Redis key the queue uses is spelled here, with its lifetime next to it.

All keys of one facility share the hash tag ``{hip_id}`` so that every Lua script touches a single
Redis Cluster slot. Scripts receive the facility prefix and derive per-token / per-counter keys from it
(the token ids they act on are only known inside the script); the tag keeps those keys in the same slot.
"""

from __future__ import annotations

ROOT = "opd"

# Sequences, request-id and re-scan mappings outlive the local day by a margin so a late retry of
# yesterday's share still finds its token; token hashes are kept long enough for the day's reports
# to be rebuilt from SQL instead.
SEQ_TTL_S = 3 * 24 * 3600
REQUEST_TTL_S = 2 * 24 * 3600
TOKEN_TTL_S = 3 * 24 * 3600


def facility_prefix(hip_id: str) -> str:
    """``opd:{IN0710000123}:`` — the prefix every script derives its keys from."""
    return f"{ROOT}:{{{hip_id}}}:"


def events_stream(hip_id: str) -> str:
    """Append-only stream of state changes (the recorder copies it to SQL)."""
    return facility_prefix(hip_id) + "ev"


def expiry_zset(hip_id: str) -> str:
    """Waiting tokens by the ms time at which they expire if never called."""
    return facility_prefix(hip_id) + "exp"


def live_channel(hip_id: str) -> str:
    """Pub/sub channel carrying the same events for boards and consoles."""
    return facility_prefix(hip_id) + "live"


def config_channel() -> str:
    """Pub/sub channel on which an admin's facility change is announced to every worker (the message is
    the facility id). Not facility-tagged: a worker listens for every facility it may have cached."""
    return f"{ROOT}:config"


def token_key(hip_id: str, token_id: str) -> str:
    return facility_prefix(hip_id) + "t:" + token_id


def lane_key(hip_id: str, counter: str, lane: str) -> str:
    """``lane`` is ``p`` (priority) or ``n`` (normal)."""
    return facility_prefix(hip_id) + f"q:{counter}:{lane}"


def called_zset(hip_id: str, counter: str) -> str:
    return facility_prefix(hip_id) + f"called:{counter}"


def sequence_key(hip_id: str, counter: str, local_date: str) -> str:
    return facility_prefix(hip_id) + f"seq:{counter}:{local_date}"


def order_key(hip_id: str) -> str:
    """Facility-wide arrival counter used as the lane score."""
    return facility_prefix(hip_id) + "ord"


def desk_key(hip_id: str, desk: str) -> str:
    return facility_prefix(hip_id) + "desk:" + desk


def request_key(hip_id: str, request_id: str) -> str:
    return facility_prefix(hip_id) + "r:" + request_id


def rescan_key(hip_id: str, counter: str, local_date: str, abha_address: str) -> str:
    return facility_prefix(hip_id) + f"a:{counter}:{local_date}:{abha_address}"


def sessions_key(user_id: int) -> str:
    """A staff user's live sessions: a sorted set of session ids (the token's ``jti``) scored by their
    expiry (unix s). Login adds one, logout removes it, a password reset or deactivation deletes the
    key; a session token whose id is not here is refused. Users have no facility tag (a global admin
    has no facility), so the user id is the tag: every operation touches this one key. It expires
    with the user's last session."""
    return f"{ROOT}:{{user:{user_id}}}:sessions"


def hip_of_token_id(token_id: str) -> str:
    """Token ids are ``HIP.COUNTER.YYYYMMDD.NNNNN``; the facility is recoverable without a lookup."""
    return token_id.split(".", 1)[0]
