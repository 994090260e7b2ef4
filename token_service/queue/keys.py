"""Every Redis key the queue uses is spelled here, with its lifetime next to it.

All keys of one facility share the hash tag ``{hip_id}`` so that every Lua script touches a single
Redis Cluster slot. Scripts receive the facility prefix and derive per-token / per-counter keys from it
(the token ids they act on are only known inside the script); the tag keeps those keys in the same slot.
"""

from __future__ import annotations

ROOT = "opd"

# Sequences and re-scan maps outlive the local day by a margin; token records are kept long enough for
# the day's reports to be rebuilt from SQL instead. The scripts (lua/_lib.lua) spell the same keys.
SEQ_TTL_S = 3 * 24 * 3600
TOKEN_TTL_S = 3 * 24 * 3600


def facility_prefix(hip_id: str) -> str:
    """``opd:{IN0710000123}:`` — the prefix every script derives its keys from."""
    return f"{ROOT}:{{{hip_id}}}:"


def events_stream(hip_id: str) -> str:
    """Append-only stream of state changes (the recorder copies it to SQL)."""
    return facility_prefix(hip_id) + "ev"


def expiry_index(hip_id: str) -> str:
    """The expiry wheel's index: a sorted set of the minutes (ms // 60,000) that have a list of tokens
    expiring in them (``wheel_key``)."""
    return facility_prefix(hip_id) + "xb"


def wheel_key(hip_id: str, minute: int) -> str:
    """``<ref>@<ms into the minute>`` of the tokens whose deadline falls in this minute, in deadline
    order (entries of tokens no longer waiting stay until the sweep meets them)."""
    return facility_prefix(hip_id) + f"x:{minute}"


def live_channel(hip_id: str) -> str:
    """Pub/sub channel carrying the same events for boards and consoles."""
    return facility_prefix(hip_id) + "live"


def config_channel() -> str:
    """Pub/sub channel on which an admin's facility change is announced to every worker (the message is
    the facility id). Not facility-tagged: a worker listens for every facility it may have cached."""
    return f"{ROOT}:config"


BUCKET = 64  # token records per hash: small enough for Redis's compact (listpack) hash encoding


def token_ref(token_id: str) -> str:
    """A token's id without its facility (``OPD1.20261122.00001``): what lanes and maps hold."""
    return token_id.split(".", 1)[1]


def token_bucket(hip_id: str, origin_counter: str, local_date: str, number: int) -> str:
    """The hash holding the records of 64 consecutive numbers of one (counter, day): field ``<number>``
    is a token's packed record (``queue/record.py``), field ``e`` the day's end in ms."""
    return facility_prefix(hip_id) + f"k:{origin_counter}:{local_date}:{number // BUCKET}"


def token_location(token_id: str) -> tuple[str, str] | None:
    """(bucket key, field) of a token id, or None if it is not one."""
    parts = token_id.split(".")
    if len(parts) != 4 or not parts[3].isdigit() or len(parts[2]) != 8 or not parts[2].isdigit():
        return None
    hip_id, counter, local_date, number = parts
    return token_bucket(hip_id, counter, local_date, int(number)), str(int(number))


def lane_key(hip_id: str, counter: str, lane: str) -> str:
    """``lane`` is ``p`` (priority) or ``n`` (normal): a list of token refs in calling order."""
    return facility_prefix(hip_id) + f"w:{counter}:{lane}"


def lane_counts(hip_id: str) -> str:
    """Hash of every lane's change counters (``<counter>:<lane>:h|t|e``), kept by the scripts."""
    return facility_prefix(hip_id) + "wv"


def called_zset(hip_id: str, counter: str) -> str:
    return facility_prefix(hip_id) + f"called:{counter}"


def sequence_key(hip_id: str, counter: str, local_date: str) -> str:
    return facility_prefix(hip_id) + f"seq:{counter}:{local_date}"


def order_key(hip_id: str) -> str:
    """Facility-wide arrival counter used as the lane score."""
    return facility_prefix(hip_id) + "ord"


def desk_key(hip_id: str, desk: str) -> str:
    return facility_prefix(hip_id) + "desk:" + desk


def request_bucket_prefix(hip_id: str) -> str:
    """``r:<utc day>:<3 hex of sha1(request id)>``: hashes of REQUEST-ID -> token ref, read for the
    current and the previous UTC day (a retry is recognised for 24 to 48 hours)."""
    return facility_prefix(hip_id) + "r:"


def rescan_bucket_prefix(hip_id: str, counter: str, local_date: str) -> str:
    """``a:<counter>:<day>:<0..1023>``: hashes of ABHA address -> number, for re-scans."""
    return facility_prefix(hip_id) + f"a:{counter}:{local_date}:"


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
