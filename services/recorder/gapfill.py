"""Which messages the recorder holds, which it lacks, and what to ask the acquirer for.

PUB/SUB drops silently (a full queue, a reconnect, the recorder's own crash),
so the recorder accounts for every seq of every stream — a (publisher,
instance, type) triple whose seqs are gap-free — and never relies on the
bus alone:

- a message is *claimed* once; a second copy (live and refetched, or
  refetched twice) is refused, so nothing is archived twice;
- a hole in an acquirer stream is asked for again from the acquirer's
  retransmit buffer (which holds at least 60 s), in batches;
- what the acquirer no longer holds, and every hole in another publisher's
  stream (they keep no buffer), becomes a `GapNote`, which the service
  records as a `gap` record with an alarm — never papered over.

Where a stream starts matters: the recorder must not ask for messages that
precede its knowledge of a session. A stream first met at seq > 0 (the
recorder joined late, or restarted) is probed backwards until a message of
a session the recorder is not recording shows where the session began; a
session resumed after a restart is probed forwards from its newest archived
seq, so what was sent while the recorder was away is fetched even if no
later message of that type ever comes.

Pure bookkeeping: no sockets, no files. The service sends the `Request`s
and hands back what came.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ...proto.control import MAX_RETRANSMIT as MAX_BATCH
from amrwatch.archive.seqset import SeqSet

StreamKey = tuple[str, str, str]
"""(publisher, instance, type)."""

#: Types the acquirer publishes for a session and keeps in its retransmit buffer.
ACQUIRER_TYPES = ("session_start", "stage", "factors", "emg_frame", "stimulus", "sim_truth", "session_end")
MAX_SEQ = 2**62


@dataclass(frozen=True)
class Request:
    key: StreamKey
    from_seq: int
    to_seq: int
    purpose: str
    """'fill' (a known hole), 'tail' (after the newest archived seq), 'scan' (everything the acquirer
    holds of a type the recorder has nothing of) or 'back' (just before the stream's first live seq)."""


@dataclass(frozen=True)
class GapNote:
    """Messages that will never be archived: record them as a gap in `session_id`."""

    key: StreamKey
    from_seq: int
    to_seq: int
    session_id: str | None
    reason: str

    @property
    def count(self) -> int:
        return self.to_seq - self.from_seq + 1


class OwnerRuns:
    """Which session each accounted seq belonged to, as runs of consecutive seqs."""

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        self._sid: list[str | None] = []

    def add(self, seq: int, sid: str | None) -> None:
        i = bisect.bisect_right(self._lo, seq) - 1
        if i >= 0 and self._lo[i] <= seq <= self._hi[i]:
            return
        if i >= 0 and self._hi[i] == seq - 1 and self._sid[i] == sid:
            self._hi[i] = seq
            if i + 1 < len(self._lo) and self._lo[i + 1] == seq + 1 and self._sid[i + 1] == sid:
                self._hi[i] = self._hi[i + 1]
                del self._lo[i + 1], self._hi[i + 1], self._sid[i + 1]
            return
        if i + 1 < len(self._lo) and self._lo[i + 1] == seq + 1 and self._sid[i + 1] == sid:
            self._lo[i + 1] = seq
            return
        self._lo.insert(i + 1, seq)
        self._hi.insert(i + 1, seq)
        self._sid.insert(i + 1, sid)

    def near(self, a: int, b: int) -> tuple[str | None, str | None]:
        """(session of the nearest known seq after b, session of the nearest before a)."""
        j = bisect.bisect_right(self._lo, b)
        after = self._sid[j] if j < len(self._lo) else None
        i = bisect.bisect_right(self._lo, a - 1) - 1
        before = self._sid[i] if i >= 0 else None
        return after, before

    def newest(self) -> str | None:
        return self._sid[-1] if self._sid else None


@dataclass
class Stream:
    key: StreamKey
    refillable: bool
    accounted: SeqSet = field(default_factory=SeqSet)
    floor: int | None = None
    """Every seq from here on must be accounted for (archived, or recorded as a gap)."""
    owners: OwnerRuns = field(default_factory=OwnerRuns)
    tail: bool = False
    """Ask past the newest accounted seq until the acquirer has nothing newer."""
    scan: int | None = None
    """Ask for everything the acquirer holds from this seq on (the stream's start is unknown)."""
    back: int | None = None
    """Probe below this seq for the stream's start (joined late)."""
    back_step: int = 1
    attempts: int = 0

    def holes(self) -> list[tuple[int, int]]:
        if self.floor is None or self.accounted.max is None:
            return []
        return list(self.accounted.holes(self.floor, self.accounted.max))


class GapFiller:
    """The accounting of every stream the recorder sees."""

    def __init__(self, *, is_recording: Callable[[str | None], bool], batch: int = 2000,
                 attempts: int = 5, refillable: Callable[[str], bool] = lambda pub: pub == "acquirer") -> None:
        self.is_recording = is_recording
        self.batch = batch
        self.max_attempts = attempts
        self.refillable = refillable
        self.streams: dict[StreamKey, Stream] = {}
        self.notes: list[GapNote] = []
        self._instances: dict[str, set[str]] = {}

    # ------------------------------------------------------------ what we hold

    def preload(self, key: StreamKey, seqs: SeqSet, session_id: str, *, tail: bool) -> None:
        """Seqs archived before a restart; with `tail`, ask the acquirer for anything newer."""
        s = self._stream(key)
        for a, b in seqs.ranges():
            s.accounted.add_range(a, b)
            s.owners.add(a, session_id)
            s.owners.add(b, session_id)
        lo = seqs.min
        if lo is not None:
            s.floor = lo if s.floor is None else min(s.floor, lo)
        s.tail = tail and s.refillable

    def probe_type(self, publisher: str, instance: str, type_: str) -> None:
        """A type the acquirer may have sent while the recorder was away and may never send again."""
        s = self._stream((publisher, instance, type_))
        if s.refillable and not s.accounted:
            s.scan = 0

    def claim(self, key: StreamKey, seq: int, session_id: str | None, *, live: bool = True) -> bool:
        """Account for one message; False if it already was (do not archive it twice)."""
        new_stream = key not in self.streams
        s = self._stream(key)
        if seq in s.accounted:
            return False
        if live and s.floor is None:
            publisher, instance, _ = key
            others = self._instances.get(publisher, set()) - {instance}
            if new_stream and others:
                s.floor = 0  # the publisher restarted while we listened: its new seqs start at 0
            else:
                s.floor = seq
                if s.refillable and seq > 0 and (seq - 1) not in s.accounted:
                    s.back = seq
        if live and not s.refillable and s.accounted.max is not None and seq > s.accounted.max + 1:
            self._give_up(s, s.accounted.max + 1, seq - 1, session_id,
                          f"{key[0]} keeps no retransmit buffer: lost on the bus")
        elif live and not s.refillable and s.floor is not None and s.accounted.max is None and seq > s.floor:
            self._give_up(s, s.floor, seq - 1, session_id, f"{key[0]} keeps no retransmit buffer: lost on the bus")
        s.accounted.add(seq)
        s.owners.add(seq, session_id)
        s.attempts = 0
        return True

    def _stream(self, key: StreamKey) -> Stream:
        s = self.streams.get(key)
        if s is None:
            s = self.streams[key] = Stream(key, self.refillable(key[0]))
            self._instances.setdefault(key[0], set()).add(key[1])
        return s

    # --------------------------------------------------------- what we ask for

    def next_request(self) -> Request | None:
        """The next retransmit request worth sending: known holes first, then probes."""
        for s in self.streams.values():
            if not s.refillable:
                continue
            for a, b in s.holes():
                return Request(s.key, a, min(b, a + self.batch - 1), "fill")
        for s in self.streams.values():
            if s.refillable and s.back is not None:
                lo = max(0, s.back - s.back_step)
                return Request(s.key, lo, s.back - 1, "back")
        for s in self.streams.values():
            if s.refillable and s.tail and s.accounted:
                start = s.accounted.max + 1
                return Request(s.key, start, start + self.batch - 1, "tail")
        for s in self.streams.values():
            if s.refillable and s.scan is not None:
                return Request(s.key, s.scan, MAX_SEQ, "scan")
        return None

    def on_reply(self, req: Request, got: Iterable[tuple[int, str | None]],
                 unavailable: tuple[int, int] | None, *, resume_from: int | None = None,
                 last_sent: int | None = None) -> None:
        """The acquirer answered: `got` is (seq, session_id) of every message it returned (already claimed
        by the caller); `unavailable` the seqs it no longer holds; `resume_from` where a reply cut at its size
        limit goes on; `last_sent` the newest seq of the type the acquirer has sent (nothing after it is lost,
        it was never sent)."""
        s = self.streams[req.key]
        got = list(got)
        if unavailable is not None and last_sent is not None:
            unavailable = (unavailable[0], min(unavailable[1], last_sent)) if unavailable[0] <= last_sent else None
        if req.purpose == "back":
            self._back_reply(s, req, got, unavailable)
            return
        if req.purpose == "scan":
            # Nothing of this stream was known: what aged out precedes our knowledge, it is not a loss.
            ours = [seq for seq, sid in got if self.is_recording(sid)]
            if ours:
                s.floor = min(ours) if s.floor is None else min(s.floor, min(ours))
            if resume_from is not None:
                s.scan = resume_from
            else:
                s.scan = (max(seq for seq, _ in got) + 1) if len(got) >= min(self.batch, MAX_BATCH) else None
            return
        if unavailable is not None:
            a, b = max(unavailable[0], req.from_seq), min(unavailable[1], req.to_seq)
            if a <= b:
                after, before = s.owners.near(a, b)
                self._give_up(s, a, b, after or before, "aged out of the acquirer's retransmit buffer "
                              "before the recorder could refetch them")
        if req.purpose == "tail" and len(got) < req.to_seq - req.from_seq + 1 and resume_from is None:
            s.tail = False
        if not got and unavailable is None:
            s.attempts += 1
            if s.attempts >= self.max_attempts:
                self._fail_stream(s, f"the acquirer did not return them after {s.attempts} requests", req)

    def _back_reply(self, s: Stream, req: Request, got: list[tuple[int, str | None]],
                    unavailable: tuple[int, int] | None) -> None:
        foreign = [seq for seq, sid in got if not self.is_recording(sid)]
        if foreign:
            start = max(foreign) + 1
            s.back = None
        elif unavailable is not None and unavailable[1] >= req.from_seq:
            start = min(unavailable[1], req.to_seq) + 1
            a = max(unavailable[0], req.from_seq)
            if a < start:
                after, _ = s.owners.near(a, start - 1)
                self._give_up(s, a, start - 1, after, "aged out of the acquirer's retransmit buffer; the recorder "
                              "joined late and cannot tell whether they belong to this session or an earlier one")
            s.back = None
        elif req.from_seq == 0 or not got:
            start = req.from_seq if got else req.to_seq + 1
            s.back = None
        else:
            start = min(seq for seq, _ in got)
            s.back = start
            s.back_step = self.batch
        s.floor = start if s.floor is None else min(s.floor, start)

    def on_failure(self, req: Request, reason: str) -> None:
        """A request the acquirer refused or never answered (counted per stream)."""
        s = self.streams[req.key]
        s.attempts += 1
        if "not this acquirer" in reason or s.attempts >= self.max_attempts:
            self._fail_stream(s, reason, req)

    def instance_gone(self, publisher: str, instance: str, reason: str) -> None:
        for s in list(self.streams.values()):
            if s.key[0] == publisher and s.key[1] == instance and s.refillable:
                self._fail_stream(s, reason, None)

    def _fail_stream(self, s: Stream, reason: str, req: Request | None) -> None:
        for a, b in s.holes():
            after, before = s.owners.near(a, b)
            self._give_up(s, a, b, after or before, reason)
        s.back = None
        s.tail = False
        s.scan = None
        s.attempts = 0

    # ---------------------------------------------------------------- closing

    def pending_for(self, session_id: str) -> bool:
        """Is anything still being refetched that may belong to this session?"""
        for s in self.streams.values():
            if not s.refillable:
                continue
            for a, b in s.holes():
                after, before = s.owners.near(a, b)
                if session_id in (after, before):
                    return True
            if (s.tail or s.back is not None or s.scan is not None) and s.owners.newest() in (session_id, None):
                return True
        return False

    def give_up_for(self, session_id: str, reason: str) -> None:
        """Stop refetching for a session that must close now: what is missing becomes gaps."""
        for s in self.streams.values():
            if not s.refillable:
                continue
            for a, b in s.holes():
                after, before = s.owners.near(a, b)
                if session_id in (after, before):
                    self._give_up(s, a, b, after or before, reason)
            if s.owners.newest() in (session_id, None):
                s.tail = False
                s.back = None
                s.scan = None

    def _give_up(self, s: Stream, a: int, b: int, session_id: str | None, reason: str) -> None:
        s.accounted.add_range(a, b)
        self.notes.append(GapNote(s.key, a, b, session_id, reason))

    def take_notes(self) -> list[GapNote]:
        out, self.notes = self.notes, []
        return out
