"""Masked names for the board, and the board's pre-encoded SSE events (read as an EventSource reads them)."""

from __future__ import annotations

import unicodedata

import orjson
import pytest

from token_service.api.live import CallEntry, Snapshot, dumps, sse_bytes
from token_service.queue.lanes import LaneCopy, Lanes
from token_service.masking import first_grapheme, mask_name
from token_service.queue.service import Token
from token_service.queue.status import Priority, Source, Status


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("Ramesh Kumar", "R**** K****"),
        ("Ramesh Kumar Verma", "R**** K****"),  # at most two words
        ("  ramesh   kumar ", "r**** k****"),
        ("Ramesh", "R****"),
        ("R", "R****"),
        ("", ""),
        ("   ", ""),
        (None, ""),
        ("Walk-in 3", "W****"),  # a word without a letter is left out
        ("(Sita) Devi", "S**** D****"),
        ("José Álvarez", "J**** Á****"),
        ("Jose\u0301 A\u0301lvarez", "J**** Á****"),  # decomposed accents stay on their letter
        ("रमेश कुमार", "र**** कु****"),  # the vowel sign stays with क
        ("सीता देवी शर्मा", "सी**** दे****"),
        ("क्षमा", "क्ष****"),  # a conjunct is one character to the eye
        ("ક્ષમા પટેલ", "ક્ષ**** પ****"),
        ("શ્રીમતી ગીતા", "શ્રી**** ગી****"),
        ("ਗੁਰਪ੍ਰੀਤ ਸਿੰਘ", "ਗੁ**** ਸਿੰ****"),
        ("அருண் குமார்", "அ**** கு****"),
    ],
)
def test_mask_name(name: str | None, masked: str) -> None:
    assert mask_name(name) == unicodedata.normalize("NFC", masked)


def test_mask_never_cuts_a_mark_off_its_base() -> None:
    for name in ("रमेश कुमार", "ક્ષમા પટેલ", "श्रीमती", "ज़ैनब", "ḍhruv", "কৃষ্ণ দাস", "ಕೃಷ್ಣ"):
        for word in mask_name(name).split():
            shown = word.removesuffix("****")
            assert shown and not unicodedata.combining(shown[0])
            assert unicodedata.category(shown[0]).startswith("L")
            assert name.startswith(shown) or f" {shown}" in name  # a prefix of the word, marks included
            rest = name[name.index(shown) + len(shown) :]
            assert not rest or unicodedata.category(rest[0]) not in ("Mn", "Mc")


def test_first_grapheme() -> None:
    assert first_grapheme("") == ""
    assert first_grapheme("कुमार") == "कु"
    assert first_grapheme("क्\u200dष") == "क्\u200dष"  # explicit half form (ZWJ)
    assert first_grapheme("क्\u200cष") == "क्\u200c"  # ZWNJ breaks the conjunct after it
    assert first_grapheme("Ab") == "A"


def _token(**over: object) -> Token:
    base: dict[str, object] = dict(
        id="IN1.OPD1.20261122.00007", public_id="pub7", hip_id="IN1", counter="OPD1", origin_counter="OPD1",
        local_date="20261122", number=7, label="A7", status=Status.CALLED, priority=Priority.NORMAL,
        source=Source.WALK_IN, abha_address=None, request_id=None, order=7.0, issued_ms=1, called_ms=2,
        served_ms=None, finished_ms=None, expires_ms=3, day_end_ms=4, desk="D1", skips=0, recalls=0, version=2,
    )  # fmt: skip
    base.update(over)
    return Token(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [{}, {"a": 1}, {"label": "A7", "name": "र**** कु****", "line": "x\ny\r\nz", "tab": "\t", "q": "\"'"}],
)
@pytest.mark.parametrize("ident", [None, 0, 1_795_000_000_123])
def test_sse_bytes_read_back_as_one_event(data: dict[str, object], ident: int | None) -> None:
    raw = sse_bytes("update", data, ident).decode()
    # One event: field lines ended by CRLF, then a blank line; no other CR or LF anywhere (the event
    # stream format splits lines on CRLF, CR and LF alike, so a stray one would cut the JSON).
    assert raw.endswith("\r\n\r\n") and raw.count("\r\n\r\n") == 1
    lines = raw[:-4].split("\r\n")
    assert not any("\r" in line or "\n" in line for line in lines)
    fields = dict(line.partition(": ")[::2] for line in lines)
    expected = {"event": "update", "data": dumps(data)}
    if ident is not None:
        expected["id"] = str(ident)
    assert fields == expected and len(lines) == len(expected)
    assert orjson.loads(fields["data"]) == data


def _lanes(by_counter: dict[str, tuple[list[str], list[str]]]) -> Lanes:
    return Lanes({c: (LaneCopy(p, (0, 0, 0)).view(), LaneCopy(n, (0, 0, 0)).view()) for c, (p, n) in by_counter.items()})


def test_snapshot_encodes_once_per_filter_and_positions() -> None:
    snap = Snapshot(
        hip_id="IN1", version=5, desks=[{"desk": "D1", "name": "Desk 1", "counters": ["OPD1"], "now": None}],
        recent=[CallEntry("t1", "A1", 1, "OPD1", "D1", 10, name="R**** K****"), CallEntry("t2", "B1", 1, "OPD2", "D1", 9)],
        waiting={"OPD1": 3, "OPD2": 1}, lanes=_lanes({"OPD1": (["p.1"], ["a.1", "b.1"]), "OPD2": ([], ["c.1"])}),
        desk_names={"D1": "Desk 1"},
    )  # fmt: skip
    whole = snap.sse("update")
    assert snap.sse("update") is whole  # the same bytes object for every listener
    only = snap.sse("update", frozenset({"OPD2"}))
    assert only is snap.sse("update", frozenset({"OPD2"})) and only != whole
    assert b'"name":"R**** K****"' in whole and b'"name":' not in only
    assert snap.sse("snapshot").startswith(b"id: 5\r\nevent: snapshot\r\ndata: ")
    waiting = _token(status=Status.WAITING)
    # The priority lane is ahead of the normal one.
    assert snap.position(_token(id="IN1.b.1", status=Status.WAITING)) == 2
    assert snap.position(_token(id="IN1.p.1", status=Status.WAITING, priority=Priority.SENIOR)) == 0
    assert snap.position(_token(id="IN1.c.1", status=Status.WAITING)) is None  # in OPD2's line, not OPD1's
    assert snap.position(_token(id="IN1.c.1", counter="OPD2", status=Status.WAITING)) == 0
    assert snap.position(waiting) is None and snap.position(_token(id="IN1.a.1")) is None  # called: none
