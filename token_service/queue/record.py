"""A token's packed record, as the scripts store it (``lua/_lib.lua``: ``pack`` / ``unpack_record``).

One Redis hash holds the records of 64 consecutive numbers of a (counter, day), so that Redis keeps it
in its compact encoding (fields under 64 bytes): a waiting token's record is ~45 bytes against ~490
for a hash of its own. The id, facility, origin counter, day and number are the key and the field;
times are offsets in signed base 36 ms: the issue time from the day's end, the others from the issue
time. Fields, separated by ``|``::

    pub | counter ('' = origin) | label | status priority source (one digit each) |
    ord (an emergency's + 10^12, to keep it short) |
    eod - iss | cal - iss | srv - cal | fin - iss | eod - xp ('' = eod) | desk | skips | recalls |
    version | eod - bucket's day end ('' = same)

Empty fields at the end are left out.

The ABHA address and REQUEST-ID are not kept (they are in the issue's event and in SQL).
"""

from __future__ import annotations

from token_service.queue.status import Priority, Source, Status

# The digit of each value: the scripts' STATUS, PRIORITY and SOURCE tables list the same order.
STATUS_ORDER = tuple(s.value for s in Status)
PRIORITY_ORDER = tuple(p.value for p in Priority)
SOURCE_ORDER = tuple(s.value for s in Source)


_EMERGENCY = str(PRIORITY_ORDER.index(Priority.EMERGENCY.value))


def _ord(stored: str, priority_digit: str) -> str:
    """The ord as the scripts hold it: Lua's tostring() of the number (``%.14g``)."""
    if priority_digit != _EMERGENCY:
        return stored
    value = float(stored) - 1e12
    return str(int(value)) if value == int(value) else f"{value:.14g}"


def _num(s: str) -> int | None:
    return None if s == "" else int(s, 36)


def unpack(token_id: str, raw: str, bucket_day_end: int) -> dict[str, str]:
    """The token's fields (the scripts' table form, every value a string) from its record."""
    hip_id, origin, local_date, number = token_id.split(".")
    f = raw.split("|")
    f += [""] * (15 - len(f))
    eod = bucket_day_end + (_num(f[14]) or 0)
    iss = eod - int(f[5], 36)

    def at(s: str) -> str:
        v = _num(s)
        return "" if v is None else str(iss + v)

    srv = "" if f[7] == "" else str(iss + int(f[6], 36) + int(f[7], 36))
    codes = f[3]
    return {
        "id": token_id, "pub": f[0], "hip": hip_id, "c": f[1] or origin, "oc": origin, "d": local_date,
        "n": str(int(number)), "lbl": f[2], "s": STATUS_ORDER[int(codes[0])],
        "p": PRIORITY_ORDER[int(codes[1])], "src": SOURCE_ORDER[int(codes[2])], "abha": "", "req": "",
        "ord": _ord(f[4], codes[1]), "iss": str(iss), "cal": at(f[6]), "srv": srv, "fin": at(f[8]),
        "xp": str(eod - (_num(f[9]) or 0)), "eod": str(eod), "desk": f[10], "sk": f[11], "rc": f[12],
        "v": f[13],
    }  # fmt: skip
