"""The acquirer's retransmit buffer: the last ≥ 60 s of everything it sent.

PUB/SUB drops silently under load or while a subscriber restarts; the
recorder asks here for the seq numbers it missed. Bounded by age *and* bytes,
so a stalled recorder cannot make the acquirer grow without limit; what has
aged out is reported as unavailable, never invented.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    type: str
    seq: int
    at: float  # monotonic time it was sent
    frames: tuple[bytes, bytes, bytes]

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


class RetransmitBuffer:
    def __init__(self, keep_s: float = 90.0, max_bytes: int = 2 * 1024**3) -> None:
        if keep_s < 60.0:
            raise ValueError(f"retransmit keep_s must be at least 60 s; got {keep_s}")
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self._by_type: dict[str, deque[Entry]] = {}
        self.nbytes = 0

    def add(self, type_: str, seq: int, frames: list[bytes], now: float) -> None:
        entry = Entry(type_, seq, now, (bytes(frames[0]), bytes(frames[1]), bytes(frames[2])))
        q = self._by_type.setdefault(type_, deque())
        if q and q[-1].seq + 1 != seq:
            q.clear()  # a new publisher instance restarts seq: old entries are another stream
        q.append(entry)
        self.nbytes += entry.nbytes
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.keep_s
        for q in self._by_type.values():
            while q and (q[0].at < horizon):
                self.nbytes -= q.popleft().nbytes
        while self.nbytes > self.max_bytes:
            oldest = min((q for q in self._by_type.values() if q), key=lambda q: q[0].at)
            self.nbytes -= oldest.popleft().nbytes

    def oldest_seq(self, type_: str) -> int | None:
        q = self._by_type.get(type_)
        return q[0].seq if q else None

    def get(self, type_: str, from_seq: int, to_seq: int, limit: int,
            max_bytes: int | None = None) -> tuple[list[Entry], int | None]:
        """Entries from_seq..to_seq (inclusive, at most `limit`, and no more than `max_bytes` of them
        beyond the first) and the first requested seq that is no longer held (None if all were)."""
        q = self._by_type.get(type_)
        if not q or to_seq < from_seq:
            return [], (from_seq if to_seq >= from_seq else None)
        first = q[0].seq
        missing = from_seq if from_seq < first else None
        start = max(from_seq, first) - first
        stop = min(to_seq - first + 1, len(q), start + limit)
        out: list[Entry] = []
        nbytes = 0
        for i in range(start, max(start, stop)):
            e = q[i]
            nbytes += e.nbytes
            if out and max_bytes is not None and nbytes > max_bytes:
                break
            out.append(e)
        return out, missing
