"""The two orders an archived session is read back in.

The log holds messages in the order the recorder got them, and messages it
refetched after a loss come later than their neighbours. Readers that care
about order therefore sort, and there are two right answers:

- **signal order** — how the acquirer published the session: for each chunk
  of signal, its stage markers and patient factors, the frame, then its
  stimuli and their ground truth. Anchored on sample indices (factors, which
  carry none, on their publish time among the frames'), so refetched
  messages fall back into place. The analyzer re-run and replay use it.
- **bus order** — the order the bus delivered messages to every subscriber:
  the proxy fans each message out to all of them in one order, so the log's
  order is what the predictor saw, except that a refetched message goes
  just before the next message of its own stream that arrived live. The
  predictor re-run uses it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from amrwatch.archive.index import ArchiveIndex, Event, parse_utc

#: Signal-order phases within one chunk, as the acquirer publishes them.
_PHASE = {"stage": 0, "factors": 1, "frame": 2, "stimulus": 3, "sim_truth": 4}
SIGNAL_TYPES = ("stage", "factors", "stimulus", "sim_truth")

Item = tuple[str, Any]
"""("frame", row in index.frames) or (message type, Event)."""


class SignalOrder:
    """The acquirer-side inputs of one session, in signal order."""

    def __init__(self, index: ArchiveIndex, session_id: str | None = None, publisher: str | None = None) -> None:
        self.index = index
        sid = session_id or index.session_id
        start = index.session_start()
        pub = publisher or (start.publisher if start is not None else "acquirer")
        fr = index.frames
        streams = [i for i, (p, _inst, s, _fs) in enumerate(fr.streams) if p == pub and s == sid]
        first = _col(fr.first_sample)
        n_samp = _col(fr.n_samples)
        ts = np.frombuffer(fr.ts, dtype=np.float64) if len(fr) else np.zeros(0)
        rows = np.flatnonzero(np.isin(_col(fr.stream), streams))
        rows = rows[np.lexsort((_col(fr.record_no)[rows], first[rows]))]
        # A frame archived twice (it cannot be, but a reader must not double the signal) counts once.
        if rows.size:
            keep = np.ones(rows.size, dtype=bool)
            keep[1:] = first[rows][1:] != first[rows][:-1]
            self.duplicates = int(rows.size - keep.sum())
            rows = rows[keep]
        else:
            self.duplicates = 0
        self.rows = rows
        self.lo = first[rows]
        self.hi = self.lo + n_samp[rows]
        self.ts = ts[rows]
        self.events = [e for e in index.events if e.type in SIGNAL_TYPES and e.session_id == sid
                       and e.publisher == pub]
        stim_sample = {e.header["stimulus_index"]: e.header["sample_index"]
                       for e in self.events if e.type == "stimulus"}
        keyed = []
        for e in self.events:
            keyed.append((self._key(e, stim_sample), e.record_no, e))
        keyed.sort(key=lambda t: (t[0], t[1]))
        self._keyed = keyed

    def _anchor(self, sample: int) -> int:
        """First sample of the frame holding `sample` (the sample itself if no frame does)."""
        j = int(np.searchsorted(self.lo, sample, side="right")) - 1
        if j >= 0 and sample < self.hi[j]:
            return int(self.lo[j])
        return int(sample)

    def _by_time(self, ts: float) -> int:
        """The first sample of the first frame published after `ts`."""
        j = int(np.searchsorted(self.ts, ts, side="right"))
        if j < self.lo.size:
            return int(self.lo[j])
        return int(self.hi[-1]) if self.hi.size else 0

    def _key(self, e: Event, stim_sample: dict[int, int]) -> tuple[int, int, int]:
        h = e.header
        if e.type == "stage" and h.get("sample_index") is not None:
            return self._anchor(h["sample_index"]), _PHASE["stage"], e.seq
        if e.type == "stimulus":
            return self._anchor(h["sample_index"]), _PHASE["stimulus"], h["stimulus_index"]
        if e.type == "sim_truth" and h["stimulus_index"] in stim_sample:
            return self._anchor(stim_sample[h["stimulus_index"]]), _PHASE["sim_truth"], e.seq
        return self._by_time(parse_utc(h["ts_utc"])), _PHASE.get(e.type, 1), e.seq

    def __iter__(self) -> Iterator[Item]:
        frames = ((int(lo), _PHASE["frame"], 0, ("frame", int(r))) for lo, r in zip(self.lo, self.rows))
        events = ((k[0], k[1], k[2], (e.type, e)) for k, _no, e in self._keyed)
        for *_key, item in heapq.merge(frames, events, key=lambda t: (t[0], t[1], t[2])):
            yield item

    def runs(self) -> Iterator[tuple[str, Any]]:
        """The same order as iterating, with frames grouped: ("frames", (a, b)) for `rows[a:b]`, which
        no event separates, or (message type, Event). Readers that handle frames in bulk use it."""
        lo = self.lo
        a = 0
        for (k0, phase, _k2), _no, e in self._keyed:
            # Frames (key (lo, frame phase, 0)) come first when lo < k0, or lo == k0 and the event's phase is later.
            b = int(np.searchsorted(lo, k0, side="right" if phase > _PHASE["frame"] else "left"))
            if b > a:
                yield "frames", (a, b)
                a = b
            yield e.type, e
        if a < lo.size:
            yield "frames", (a, int(lo.size))

    def missing_samples(self) -> list[tuple[int, int]]:
        """[start, end) sample ranges between the first and last frame that no frame covers."""
        out = []
        for a, b in zip(self.hi[:-1], self.lo[1:]):
            if b > a:
                out.append((int(a), int(b)))
        return out


def _col(a) -> np.ndarray:
    return np.frombuffer(a, dtype=np.int64) if len(a) else np.zeros(0, dtype=np.int64)


def bus_order(items: Iterable[tuple[int | None, tuple[str, str, str], int, Any]]) -> list[Any]:
    """Payloads sorted into bus order.

    Each item is (log position or None if not archived, stream key, seq,
    payload). A message sits where it was logged unless a message of the same
    stream with a higher seq was logged before it — then it arrived live
    before that one and moves just in front of it. An item that was never
    archived (a recomputed event a recorded gap lost) goes in front of the
    next archived message of its stream, or at the end.
    """
    by_stream: dict[tuple[str, str, str], list[tuple[int, int | None, Any]]] = {}
    for pos, stream, seq, payload in items:
        by_stream.setdefault(stream, []).append((seq, pos, payload))
    keyed: list[tuple[float, int, int, Any]] = []
    for n, (_stream, lst) in enumerate(by_stream.items()):
        lst.sort(key=lambda t: t[0])
        best = float("inf")
        for seq, pos, payload in reversed(lst):
            if pos is not None and pos < best:
                best = pos
            keyed.append((best, n, seq, payload))
    keyed.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in keyed]

