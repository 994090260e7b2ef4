"""A plain-Python reference model of the queue's Lua scripts, field for field, for the state-machine test."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

EMERGENCY_OFFSET = 1_000_000_000_000


def g14(x: float) -> str:
    """Lua 5.1's tostring() of a number."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return "%.14g" % x


@dataclass
class Desk:
    cur: str = ""
    streak: str = "0"
    undo: dict[str, Any] | None = None


@dataclass
class Model:
    hip: str
    validity_ms: int
    ratio: int
    ageing_ms: int
    now: int = 0
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    lanes: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    called: dict[str, dict[str, float]] = field(default_factory=dict)
    exp: dict[str, float] = field(default_factory=dict)
    seq: dict[tuple[str, str], int] = field(default_factory=dict)
    ord: int = 0
    # (UTC day of the issue, REQUEST-ID) -> token id: a retry is recognised on that day and the next.
    reqs: dict[tuple[int, str], str] = field(default_factory=dict)
    abhas: dict[tuple[str, str, str], str] = field(default_factory=dict)
    desks: dict[str, Desk] = field(default_factory=dict)

    # ---- helpers mirroring _lib.lua

    def lane(self, counter: str, l: str) -> dict[str, float]:
        return self.lanes.setdefault((counter, l), {})

    def lane_of(self, t: dict[str, str]) -> tuple[str, str]:
        return (t["c"], "n" if t["p"] == "normal" else "p")

    def desk(self, name: str) -> Desk:
        return self.desks.setdefault(name, Desk())

    def save(self, t: dict[str, str]) -> None:
        t["v"] = str(int(t.get("v", "0")) + 1)
        self.tokens[t["id"]] = t

    def detach(self, t: dict[str, str]) -> None:
        self.lane(t["c"], "p").pop(t["id"], None)
        self.lane(t["c"], "n").pop(t["id"], None)
        self.called.setdefault(t["c"], {}).pop(t["id"], None)
        self.exp.pop(t["id"], None)

    def sweep(self, limit: int = 100) -> int:
        due = sorted((s, i) for i, s in self.exp.items() if s <= self.now)[:limit]
        for _, tid in due:
            self.exp.pop(tid, None)
            t = self.tokens.get(tid)
            if t and t["s"] == "waiting":
                self.detach(t)
                t["s"] = "expired"
                t["fin"] = str(self.now)
                self.save(t)
        return len(due)

    @staticmethod
    def head(z: dict[str, float]) -> tuple[str, float] | None:
        if not z:
            return None
        tid, score = min(z.items(), key=lambda kv: (kv[1], kv[0]))
        return tid, score

    @staticmethod
    def ordered(z: dict[str, float]) -> list[tuple[str, float]]:
        return sorted(z.items(), key=lambda kv: (kv[1], kv[0]))

    def remember(self, desk: str, entries: list[dict[str, Any]], prev_cur: str, prev_streak: str) -> None:
        self.desk(desk).undo = {"e": entries, "cur": prev_cur, "streak": prev_streak}

    @staticmethod
    def undo_entry(before: dict[str, str], after: dict[str, str]) -> dict[str, Any]:
        return {"prev": before, "v": after["v"]}

    def place_after(self, lane: dict[str, float], places: int) -> float | None:
        """Between the tokens at `places` and `places` + 1; None when there is none after the place."""
        places = max(places, 1)
        window = self.ordered(lane)[places - 1 : places + 1]
        if len(window) < 2:
            return None
        return (window[0][1] + window[1][1]) / 2

    # ---- operations

    def issue(self, counter: str, date: str, eod: int, req: str, abha: str, prio: str, src: str, pub: str,
              prefix: str) -> tuple[str, str]:  # fmt: skip
        self.sweep()
        gen = self.now // 86_400_000
        known = self.reqs.get((gen, req)) or self.reqs.get((gen - 1, req))
        if req and known in self.tokens:
            return known, "duplicate"
        akey = (counter, date, abha)
        if abha and akey in self.abhas:
            t = self.tokens.get(self.abhas[akey])
            if t and t["s"] in ("waiting", "called"):
                if req:
                    self.reqs[(gen, req)] = t["id"]
                return t["id"], "rescan"
        n = self.seq.get((counter, date), 0) + 1
        self.seq[(counter, date)] = n
        self.ord += 1
        order = self.ord - EMERGENCY_OFFSET if prio == "emergency" else self.ord
        tid = f"{self.hip}.{counter}.{date}.{n:05d}"
        xp = min(self.now + self.validity_ms, eod)
        t = {
            "id": tid, "pub": pub, "hip": self.hip, "c": counter, "oc": counter, "d": date, "n": str(n),
            "lbl": prefix + str(n), "s": "waiting", "p": prio, "src": src, "abha": abha, "req": req,
            "ord": g14(order), "iss": str(self.now), "cal": "", "srv": "", "fin": "", "xp": g14(xp),
            "eod": g14(eod), "desk": "", "sk": "0", "rc": "0", "v": "0",
        }  # fmt: skip
        self.save(t)
        self.lane(*self.lane_of(t))[tid] = float(order)
        self.exp[tid] = float(xp)
        if req:
            self.reqs[(gen, req)] = tid
        if abha:
            self.abhas[akey] = tid
        return tid, "created"

    def call_next(self, desk: str, counters: list[str]) -> tuple[str | None, str | None]:
        self.sweep()
        best_p: tuple[str, float] | None = None
        best_n: tuple[str, float] | None = None
        for c in counters:
            hp = self.head(self.lane(c, "p"))
            if hp and (best_p is None or hp[1] < best_p[1]):
                best_p = hp
            hn = self.head(self.lane(c, "n"))
            if hn and (best_n is None or hn[1] < best_n[1]):
                best_n = hn
        if best_p is None and best_n is None:
            return None, None
        d = self.desk(desk)
        streak = int(d.streak)
        prev_streak = str(streak)
        if best_p and best_p[1] < 0:
            pick = best_p[0]
        else:
            aged = best_n is not None and self.now - int(self.tokens[best_n[0]]["iss"]) >= self.ageing_ms
            if best_n and aged:
                pick, streak = best_n[0], 0
            elif best_p and (best_n is None or streak < self.ratio):
                pick, streak = best_p[0], streak + 1
            else:
                assert best_n is not None
                pick, streak = best_n[0], 0
        entries = []
        prev_cur = d.cur
        done = None
        if prev_cur:
            cur = self.tokens.get(prev_cur)
            if cur and cur["s"] == "called" and cur["desk"] == desk:
                before = copy.deepcopy(cur)
                self.detach(cur)
                cur["s"] = "completed"
                cur["fin"] = str(self.now)
                self.save(cur)
                entries.append(self.undo_entry(before, cur))
                done = cur["id"]
        t = self.tokens[pick]
        before = copy.deepcopy(t)
        self.detach(t)
        t["s"] = "called"
        t["desk"] = desk
        if t["cal"] == "":
            t["cal"] = str(self.now)
        t["srv"] = str(self.now)
        self.save(t)
        self.called.setdefault(t["c"], {})[t["id"]] = float(self.now)
        entries.append(self.undo_entry(before, t))
        d.cur, d.streak = t["id"], str(streak)
        self.remember(desk, entries, prev_cur, prev_streak)
        return t["id"], done

    def recall(self, tid: str, desk: str) -> str:
        self.sweep()
        t = self.tokens.get(tid)
        if t is None:
            return "not_found"
        if t["s"] != "called":
            return "conflict"
        if desk and desk != t["desk"]:
            old = self.desk(t["desk"])
            if old.cur == tid:
                old.cur = ""
            t["desk"] = desk
            self.desk(desk).cur = tid
        t["rc"] = str(int(t["rc"]) + 1)
        t["srv"] = str(self.now)
        self.save(t)
        return "ok"

    def skip(self, tid: str, desk: str, places: int) -> str:
        self.sweep()
        t = self.tokens.get(tid)
        if t is None:
            return "not_found"
        if t["s"] != "called":
            return "conflict"
        d = self.desk(desk)
        prev_cur, prev_streak = d.cur, d.streak
        before = copy.deepcopy(t)
        self.detach(t)
        if int(t["sk"]) >= 1:
            t["s"] = "no_show"
            t["fin"] = str(self.now)
            t["sk"] = str(int(t["sk"]) + 1)
            self.save(t)
        else:
            lane = self.lane(*self.lane_of(t))
            score = self.place_after(lane, places)
            if score is None:
                self.ord += 1
                score = float(self.ord)
            t["s"] = "waiting"
            t["sk"] = "1"
            t["ord"] = g14(score)
            t["xp"] = t["eod"]
            t["desk"] = ""
            self.save(t)
            lane[tid] = score
            self.exp[tid] = float(t["xp"])
        if d.cur == tid:
            d.cur = ""
        self.remember(desk, [self.undo_entry(before, t)], prev_cur, prev_streak)
        return "ok"

    def finish(self, tid: str, desk: str, to: str) -> str:
        self.sweep()
        t = self.tokens.get(tid)
        if t is None:
            return "not_found"
        if not (t["s"] == "called" or (to == "cancelled" and t["s"] == "waiting")):
            return "conflict"
        before = copy.deepcopy(t)
        prev_cur, prev_streak = "", "0"
        if desk:
            prev_cur, prev_streak = self.desk(desk).cur, self.desk(desk).streak
        self.detach(t)
        t["s"] = to
        t["fin"] = str(self.now)
        self.save(t)
        if t["desk"] and self.desk(t["desk"]).cur == tid:
            self.desk(t["desk"]).cur = ""
        if desk:
            self.remember(desk, [self.undo_entry(before, t)], prev_cur, prev_streak)
        return "ok"

    def transfer(self, tid: str, target: str, desk: str) -> str:
        self.sweep()
        t = self.tokens.get(tid)
        if t is None:
            return "not_found"
        if t["s"] not in ("waiting", "called"):
            return "conflict"
        if t["c"] == target:
            return "same_counter"
        before = copy.deepcopy(t)
        prev_cur, prev_streak = "", "0"
        if desk:
            prev_cur, prev_streak = self.desk(desk).cur, self.desk(desk).streak
        self.detach(t)
        if t["desk"] and self.desk(t["desk"]).cur == tid:
            self.desk(t["desk"]).cur = ""
        if t["cal"] != "":
            t["xp"] = t["eod"]
        self.ord += 1
        order = self.ord - EMERGENCY_OFFSET if t["p"] == "emergency" else self.ord
        t["c"] = target
        t["s"] = "waiting"
        t["desk"] = ""
        t["ord"] = g14(order)
        self.save(t)
        self.lane(*self.lane_of(t))[tid] = float(order)
        self.exp[tid] = float(t["xp"])
        if desk:
            self.remember(desk, [self.undo_entry(before, t)], prev_cur, prev_streak)
        return "ok"

    def undo(self, desk: str) -> str:
        d = self.desk(desk)
        rec = d.undo
        if not rec:
            return "nothing_to_undo"
        for e in rec["e"]:
            if self.tokens[e["prev"]["id"]]["v"] != e["v"]:
                return "conflict"
        for e in reversed(rec["e"]):
            t = self.tokens[e["prev"]["id"]]
            self.detach(t)
            for k, val in e["prev"].items():
                if k != "v":
                    t[k] = val
            self.save(t)
            if t["s"] == "waiting":
                self.lane(*self.lane_of(t))[t["id"]] = float(t["ord"])
                self.exp[t["id"]] = float(t["xp"])
            elif t["s"] == "called":
                self.called.setdefault(t["c"], {})[t["id"]] = float(t["srv"])
                if t["desk"]:
                    self.desk(t["desk"]).cur = t["id"]
        d.cur, d.streak, d.undo = rec["cur"], rec["streak"], None
        self.sweep()
        return "ok"
