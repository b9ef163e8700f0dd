"""The hub's per-room state, socket-free: seq tracking, backfill decisions, gaps, staleness, the tile.

One `Room` per cart. Every event the hub takes — live from the cart's bus or
backfilled from its control socket — goes through `Room.take`, which keeps it
exactly once by (publisher instance, type, seq) and notes the seqs that are
missing. `Room.backfill_plan` turns the missing seqs into retransmit requests.
What the cart's retransmit buffer no longer holds (aged out, ≥ 60 s) is asked
of the cart's archive read-out when the room has one (`Room.aged_out` →
`ArchiveAsk`, the recorder's `archive_read`, chunk after chunk); only what the
archive does not hold either — or what it refused, or never answered — becomes
a *gap*, its reason naming which source said what: recorded, shown on the
tile and counted, never hidden. Staleness is the age of the newest data
(any message, heartbeats included); past `stale_after_s` the room's
`link_stale` alarm is raised, and cleared when data flows again.

Why per (instance, type): that is the unit of the bus's gap-free seq
(proto/README.md, "Loss"); a restarted publisher is a new stream from 0.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

#: What the hub follows of a cart: events and display state, never raw frames (WAN-sized, issue #19 item 4).
EVENT_TYPES = ("session_start", "session_end", "stimulus", "stage", "factors", "baseline", "amr_state",
               "amr_course", "prediction", "decision", "alarm", "alarm_ack", "reader_note", "service_settings")
#: Subscribed too, for liveness and staleness only (not tracked for exactly-once, not backfilled).
LIVENESS_TYPES = ("heartbeat",)
#: Display-ready sweeps a cart's monitor publishes (`--publish-sweeps`): the tile draws the newest per channel;
#: not backfilled (a display, superseded by the next stimulus's sweep).
DISPLAY_TYPES = ("sweep_display",)
#: Alarm priorities, highest first (IEC 60601-1-8 colours on the page: high red, medium yellow, low cyan).
PRIORITY_ORDER = ("high", "medium", "low")
#: Most seqs asked for in one retransmit request (the cart caps replies at 2,000 messages anyway).
MAX_ASK = 2000
#: Where a backfilled event came from: the acquirer's retransmit buffer, or the recorder's archive read-out.
SOURCES = ("retransmit", "archive")
#: `via` of an event taken from each source (the hub's events.jsonl; "backfill" kept for the retransmit).
VIA = {"retransmit": "backfill", "archive": "archive"}


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as contiguous (first, last) runs."""
    out: list[tuple[int, int]] = []
    for x in seqs:
        if out and out[-1][1] + 1 == x:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


@dataclass
class Stream:
    """One (publisher, instance, type) seq stream as the hub holds it."""

    publisher: str
    next_seq: int = 0  # every seq below is held or recorded as a gap
    held_above: set[int] = field(default_factory=set)  # held seqs >= next_seq (arrived out of order)
    highest: int = -1
    missing_reported: bool = False
    #: Ranges (inclusive) being asked of the cart's archive: not missing meanwhile (not asked of the
    #: retransmit buffer again), not yet gaps.
    archive_pending: list[tuple[int, int]] = field(default_factory=list)

    def pending(self, seq: int) -> bool:
        return any(a <= seq <= b for a, b in self.archive_pending)

    def holds(self, seq: int) -> bool:
        return seq < self.next_seq or seq in self.held_above

    def add(self, seq: int) -> None:
        self.highest = max(self.highest, seq)
        if seq == self.next_seq:
            self.next_seq += 1
            while self.next_seq in self.held_above:
                self.held_above.discard(self.next_seq)
                self.next_seq += 1
        elif seq > self.next_seq:
            self.held_above.add(seq)

    def missing(self) -> list[tuple[int, int]]:
        """Ranges (inclusive) below `highest` not held."""
        out: list[tuple[int, int]] = []
        start = self.next_seq
        for s in sorted(self.held_above):
            if s > start:
                out.append((start, s - 1))
            start = s + 1
        for pa, pb in self.archive_pending:  # interval subtraction: a range may be wide (a seq jump)
            cut: list[tuple[int, int]] = []
            for a, b in out:
                if b < pa or a > pb:
                    cut.append((a, b))
                    continue
                if a < pa:
                    cut.append((a, pa - 1))
                if b > pb:
                    cut.append((pb + 1, b))
            out = cut
        return out

    def skip(self, from_seq: int, to_seq: int) -> None:
        """Record from_seq..to_seq as a gap: the hub stops asking for them."""
        for s in range(from_seq, to_seq + 1):
            if s >= self.next_seq:
                self.add(s)


@dataclass(frozen=True)
class Gap:
    publisher: str
    instance: str
    type: str
    from_seq: int
    to_seq: int
    reason: str

    @property
    def n(self) -> int:
        return self.to_seq - self.from_seq + 1


@dataclass
class Request:
    """A retransmit request the service sends to the cart's control socket."""

    publisher: str
    instance: str
    type: str
    from_seq: int
    to_seq: int
    probe: bool = False  # asking past the newest known seq: finds what was lost at the end of a stream

    def body(self, session_id: str) -> dict[str, Any]:
        return {"op": "retransmit", "session_id": session_id, "instance": self.instance, "type": self.type,
                "from_seq": self.from_seq, "to_seq": self.to_seq}


@dataclass
class ArchiveAsk:
    """An `archive_read` request the service sends to the cart's archive read-out, for seqs the retransmit
    buffer no longer held (`why`: what it said)."""

    publisher: str
    instance: str
    type: str
    from_seq: int
    to_seq: int
    why: str
    tries: int = 0

    def body(self, session_id: str) -> dict[str, Any]:
        return {"op": "archive_read", "session_id": session_id, "instance": self.instance, "type": self.type,
                "from_seq": self.from_seq, "to_seq": self.to_seq}


class Room:
    """Everything the hub knows about one cart."""

    def __init__(self, name: str, stale_after_s: float = 5.0, keep_events: int = 2000,
                 archive: bool = False) -> None:
        if not 0.5 <= stale_after_s <= 3600:
            raise ValueError(f"stale_after_s for room {name}: must be between 0.5 and 3600 s; got {stale_after_s}")
        self.name = name
        self.stale_after_s = stale_after_s
        #: The cart serves an archive read-out (the room's `archive` endpoint): aged-out ranges are asked there.
        self.archive = archive
        self.streams: dict[tuple[str, str], Stream] = {}  # (instance, type) → stream
        self.gaps: deque[Gap] = deque(maxlen=1000)  # the newest gaps, shown; all are counted in gap_total
        self.gap_total = 0
        self.session_id: str | None = None
        self.last_data: float | None = None  # monotonic time of the newest message of any kind
        self.last_stimulus_utc: str | None = None
        self.connected = False
        self.refused: str | None = None
        self.stale_alarm = False
        self.stale_changes: list[tuple[str, float]] = []  # ("raised"|"cleared", monotonic time)
        self.events = 0
        self.duplicates = 0
        self.backfilled = 0
        self.backfilled_by = dict.fromkeys(SOURCES, 0)
        self.stage: str | None = None
        self.amr: dict[str, dict[str, Any]] = {}
        self.decision: dict[str, Any] | None = None
        self.prediction: dict[str, Any] | None = None
        self.alarms: dict[str, dict[str, Any]] = {}
        self.notes: deque[dict[str, Any]] = deque(maxlen=50)
        self.sweeps: dict[str, dict[str, Any]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep_events)

    # -- intake ---------------------------------------------------------------
    def heard(self, now: float) -> None:
        """Any message from the cart (heartbeats included): the link carries data."""
        self.last_data = now

    def show_sweep(self, m: dict[str, Any], now: float) -> None:
        """The newest display sweep of a channel (drawn on the tile)."""
        self.heard(now)
        self.sweeps[m["channel"]] = {k: m[k] for k in ("stimulus_index", "t0_ms", "dt_ms", "values", "direction")}

    def take(self, msg: dict[str, Any], now: float, via: str = "live") -> bool:
        """One event (its JSON header+body as a dict). True if new, False if already held. `via`: "live",
        "backfill" (the retransmit buffer) or "archive" (the archive read-out)."""
        self.heard(now)
        key = (msg["instance"], msg["type"])
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream(msg["publisher"])
        if stream.holds(msg["seq"]):
            self.duplicates += 1
            return False
        stream.add(msg["seq"])
        self.events += 1
        if via != "live":
            self.backfilled += 1
            self.backfilled_by["archive" if via == "archive" else "retransmit"] += 1
        self._apply(msg)
        self.recent.append({"publisher": msg["publisher"], "instance": msg["instance"], "type": msg["type"],
                            "seq": msg["seq"], "via": via})
        return True

    def _apply(self, m: dict[str, Any]) -> None:
        t = m["type"]
        if m.get("session_id") and (t == "session_start" or self.session_id is None):
            self.session_id = m["session_id"]
        if t == "session_start":
            self.session_id = m["session_id"]
            self.stage, self.amr, self.decision, self.prediction = None, {}, None, None
            self.sweeps = {}
        elif t == "stage":
            self.stage = m["stage"]
        elif t == "stimulus":
            self.last_stimulus_utc = max(self.last_stimulus_utc or "", m["ts_utc"])
        elif t == "amr_state":
            self.amr[m["channel"]] = {"state": m["state"], "direction": m.get("direction"),
                                      "pct_of_baseline": m.get("pct_of_baseline")}
        elif t == "decision":
            if self.decision is None or m["decision_id"] >= self.decision["decision_id"]:
                self.decision = {k: m.get(k) for k in ("decision_id", "kind", "priority", "rationale",
                                                        "provisional", "synthetic", "notice")}
        elif t == "prediction":
            self.prediction = {k: m.get(k) for k in ("probability", "band", "synthetic", "notice")}
        elif t == "alarm":
            if m["state"] == "raised":
                self.alarms[m["alarm_key"]] = {k: m[k] for k in ("kind", "priority", "message", "source",
                                                                 "alarm_key")}
            else:
                self.alarms.pop(m["alarm_key"], None)
        elif t in ("reader_note", "alarm_ack"):
            self.notes.append({k: m.get(k) for k in ("type", "reader", "operator", "direction", "kind", "text",
                                                     "note", "alarm_key", "ts_utc")})

    # -- backfill -------------------------------------------------------------
    def backfill_plan(self, probe: bool = False) -> list[Request]:
        """Retransmit requests for every missing range; with `probe`, also one past the newest seq of each
        stream (what was lost at the end of a stream, with nothing after it to reveal it)."""
        out: list[Request] = []
        for (instance, type_), s in self.streams.items():
            for a, b in s.missing():
                out.append(Request(s.publisher, instance, type_, a, min(b, a + MAX_ASK - 1)))
            if probe:
                out.append(Request(s.publisher, instance, type_, s.next_seq, s.next_seq + MAX_ASK - 1, probe=True))
        return out

    def plan_streams(self, entries: list[dict[str, Any]]) -> list[Request]:
        """What to ask for, given the cart's list of retransmittable streams (the `streams` control op): every
        seq up to each stream's last that the hub does not hold — streams it never heard of included (their
        only messages went by while the link was down)."""
        out: list[Request] = []
        for e in entries:
            if e.get("type") not in EVENT_TYPES or not isinstance(e.get("last_seq"), int) or e["last_seq"] < 0:
                continue
            key = (e["instance"], e["type"])
            s = self.streams.get(key)
            if s is None:
                s = self.streams[key] = Stream(str(e.get("publisher", "?")))
            for a, b in s.missing():
                out.append(Request(s.publisher, e["instance"], e["type"], a, min(b, a + MAX_ASK - 1)))
            if s.next_seq <= e["last_seq"] and s.highest < e["last_seq"]:
                a = max(s.next_seq, s.highest + 1)
                out.append(Request(s.publisher, e["instance"], e["type"], a, min(e["last_seq"], a + MAX_ASK - 1)))
        return out

    def joined(self, publisher: str, instance: str, type_: str, seq: int) -> Request | None:
        """The first message of a stream came at seq > 0: ask for the beginning too."""
        if seq <= 0:
            return None
        return Request(publisher, instance, type_, 0, min(seq - 1, MAX_ASK - 1))

    def unavailable(self, req: Request, from_seq: int, to_seq: int, reason: str) -> list[Gap]:
        """The cart no longer holds from_seq..to_seq of the stream: record what the hub does not hold as gaps
        (each contiguous run one gap, so seqs held in between are never counted as lost; once)."""
        return self._gaps(self._stream(req.publisher, req.instance, req.type), req.instance, req.type, from_seq,
                          to_seq, reason)

    def _stream(self, publisher: str, instance: str, type_: str) -> Stream:
        s = self.streams.get((instance, type_))
        if s is None:
            s = self.streams[(instance, type_)] = Stream(publisher)
        return s

    def _gaps(self, s: Stream, instance: str, type_: str, from_seq: int, to_seq: int, reason: str) -> list[Gap]:
        """Record as gaps the seqs of from_seq..to_seq not held (each contiguous run one gap)."""
        out = []
        for a, b in _runs([x for x in range(from_seq, to_seq + 1) if not s.holds(x)]):
            s.skip(a, b)
            gap = Gap(s.publisher, instance, type_, a, b, reason[:500])
            self.gaps.append(gap)
            self.gap_total += gap.n
            out.append(gap)
        return out

    def aged_out(self, req: Request, from_seq: int, to_seq: int, reason: str) -> ArchiveAsk | list[Gap] | None:
        """The cart's retransmit buffer no longer holds from_seq..to_seq: with an archive read-out, the ask for
        the seqs not held (None if held, or already being asked); without, the gaps (as `unavailable`)."""
        if not self.archive:
            return self.unavailable(req, from_seq, to_seq, reason)
        s = self._stream(req.publisher, req.instance, req.type)
        todo = [x for x in range(from_seq, to_seq + 1) if not s.holds(x) and not s.pending(x)]
        if not todo:
            return None
        ask = ArchiveAsk(s.publisher, req.instance, req.type, todo[0], todo[-1], reason)
        s.archive_pending.append((ask.from_seq, ask.to_seq))
        return ask

    def archive_answered(self, ask: ArchiveAsk, detail: dict[str, Any]) -> tuple[ArchiveAsk | None, list[Gap]]:
        """The archive read-out answered `ask` (its messages already taken): the next chunk when the reply was
        cut, and the seqs it did not hold either as gaps naming both sources."""
        s = self._stream(ask.publisher, ask.instance, ask.type)
        s.archive_pending = [r for r in s.archive_pending if r != (ask.from_seq, ask.to_seq)]
        resume = detail.get("resume_from_seq")
        nxt = None
        covered_to = ask.to_seq
        if isinstance(resume, int) and ask.from_seq < resume <= ask.to_seq:
            covered_to = resume - 1
            nxt = ArchiveAsk(ask.publisher, ask.instance, ask.type, resume, ask.to_seq, ask.why)
            s.archive_pending.append((nxt.from_seq, nxt.to_seq))
        why = f"{ask.why}; the cart's archive does not hold them either"
        if detail.get("recorded_lost_reason"):
            why += f" (the archive records them as lost: {detail['recorded_lost_reason']})"
        elif detail.get("live"):
            why += f" (archive durable up to record {detail.get('durable_up_to')})"
        return nxt, self._gaps(s, ask.instance, ask.type, ask.from_seq, covered_to, why)

    def archive_failed(self, ask: ArchiveAsk, error: str) -> list[Gap]:
        """The archive read-out refused `ask`, or never answered it: what is not held becomes a gap."""
        s = self._stream(ask.publisher, ask.instance, ask.type)
        s.archive_pending = [r for r in s.archive_pending if r != (ask.from_seq, ask.to_seq)]
        return self._gaps(s, ask.instance, ask.type, ask.from_seq, ask.to_seq,
                          f"{ask.why}; the cart's archive read-out {error}")

    # -- staleness ------------------------------------------------------------
    def age(self, now: float) -> float | None:
        return None if self.last_data is None else max(0.0, now - self.last_data)

    def check_stale(self, now: float) -> str | None:
        """'raised' or 'cleared' when the link_stale alarm changes, else None."""
        age = self.age(now)
        stale = age is None or age > self.stale_after_s
        if stale and not self.stale_alarm:
            self.stale_alarm = True
            self.stale_changes.append(("raised", now))
            return "raised"
        if not stale and self.stale_alarm:
            self.stale_alarm = False
            self.stale_changes.append(("cleared", now))
            return "cleared"
        return None

    # -- the tile -------------------------------------------------------------
    def tile(self, now: float) -> dict[str, Any]:
        alarms = sorted(self.alarms.values(), key=lambda a: PRIORITY_ORDER.index(a["priority"]))
        if self.stale_alarm:
            age = self.age(now)
            alarms.insert(0, {"kind": "link_stale", "priority": "medium", "source": "hub",
                              "alarm_key": f"link_stale:{self.name}",
                              "message": ("no data from this room yet" if age is None else
                                          f"no data from this room for {age:.1f} s (threshold "
                                          f"{self.stale_after_s:g} s): what is shown is not live")})
        return {
            "room": self.name,
            "session_id": self.session_id,
            "connected": self.connected,
            "refused": self.refused,
            "stale": self.stale_alarm,
            "age_s": self.age(now),
            "stale_after_s": self.stale_after_s,
            "stage": self.stage,
            "amr": self.amr,
            "sweeps": self.sweeps,
            "decision": self.decision,
            "prediction": self.prediction,
            "alarms": alarms,
            "last_stimulus_utc": self.last_stimulus_utc,
            "events": self.events,
            "duplicates": self.duplicates,
            "backfilled": self.backfilled,
            "backfilled_by": dict(self.backfilled_by),
            "gaps": [g.__dict__ | {"n": g.n} for g in list(self.gaps)[-20:]],
            "gap_messages": self.gap_total,
            "notes": list(self.notes)[-10:],
        }
