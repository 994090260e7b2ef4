"""Server-side staff sessions: the signed token is only half of it; Redis says whether it is still live.

A session token (token_service.auth) carries the user id and a random session id (`jti`). Login adds
the id to the user's sorted set in Redis (scored by expiry), logout removes it, and a password reset or
deactivation deletes the whole set ("log out everywhere"). Every authenticated request checks its
session with one ZSCORE on that one key, so revocation is immediate in every worker and on every host,
survives service restarts (and Redis restarts with AOF), and works on Redis Cluster.

Without Redis the check cannot be made, and the request fails closed with the usual 503: a copied
token of a logged-out user must not come back to life during an outage. If Redis loses its data, every
session is gone and staff log in again.
"""

from __future__ import annotations

import time

from redis.commands.core import AsyncScript

from token_service.auth import Session
from token_service.queue import keys
from token_service.state import AppState

# Drop the user's expired sessions, add this one, keep the key as long as the longest one lives.
_START = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], last[2])
return 1
"""

_SCRIPT = "sessions_start"
# Set in the request's scope state by a handler that already ended the session it was called with.
SESSION_ENDED = "opd_session_ended"


async def start(state: AppState, session: Session) -> None:
    """Make a freshly issued session live (login)."""
    script: AsyncScript | None = state.extras.get(_SCRIPT)
    if script is None:
        script = state.extras[_SCRIPT] = state.redis.register_script(_START)
    now = int(time.time())
    await script(keys=[keys.sessions_key(session.user_id)], args=[session.session_id, session.expires, now])


async def is_live(state: AppState, session: Session) -> bool:
    score = await state.redis.zscore(keys.sessions_key(session.user_id), session.session_id)
    return score is not None and float(score) > time.time()


async def end(state: AppState, session: Session) -> None:
    """Logout: this session only."""
    await state.redis.zrem(keys.sessions_key(session.user_id), session.session_id)


async def end_all(state: AppState, user_id: int) -> None:
    """Log the user out everywhere (password reset, deactivation)."""
    await state.redis.delete(keys.sessions_key(user_id))
